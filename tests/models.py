"""Test helpers: the four pretrained models of shared/data, rebuilt from shared/data/README.md, their
checkpoint loaders, and loaders for the MNIST / CIFAR-10 test sets.

* ``resnet20() / resnet32() / resnet56()``: akamaster's CIFAR-10 ResNets (He et al. 2016, option-A
  shortcuts), written in the style of the original repository: the shortcut is a ``LambdaLayer`` whose
  lambda calls ``F.pad(x[:, :, ::2, ::2], ...)``, the head calls ``F.avg_pool2d(out, out.size()[3])``.
* ``MnistNet``: shrinkbench's MNIST CNN (conv-relu-maxpool ×2, fc-relu, fc, log_softmax).
* ``load_resnet(depth)`` / ``load_mnistnet()``: model with the pretrained weights, in eval mode.
* ``cifar10_test(...)`` / ``mnist_test(...)``: normalized NCHW float32 tensors and int64 labels.

The shared-data directory is ``$MSAT_SHARED_DATA``, else ``<repo>/../shared/data``. When it (or a file
in it) is missing the calling test fails with a message saying what to set; it is never skipped.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.init as init

REPO = Path(__file__).resolve().parents[1]

RESNET_FILES = {
    20: "models/akamaster_resnet20-12fca82f.th",
    32: "models/akamaster_resnet32-d509ac18.th",
    56: "models/akamaster_resnet56-4bfd9763.th",
}
MNISTNET_FILE = "models/shrinkbench_mnistnet.pt"
CIFAR_MEAN = (0.485, 0.456, 0.406)  # ImageNet constants, as the akamaster models were trained
CIFAR_STD = (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def shared_data_dir() -> Path:
    """The shared-data directory (``$MSAT_SHARED_DATA`` or ``<repo>/../shared/data``)."""
    return Path(os.environ.get("MSAT_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(relpath: str) -> Path:
    """Path of a file in the shared-data directory; ``pytest.fail`` with a clear message if missing."""
    root = shared_data_dir()
    path = root / relpath
    if not path.is_file():
        pytest.fail(f"shared data file {relpath!r} not found under {root} (set MSAT_SHARED_DATA to the "
                    "directory holding shared/data: mnist.npz, cifar10.npz, models/...)", pytrace=False)
    return path


# ---------------------------------------------------------------------------------------------
# akamaster CIFAR-10 ResNet (option A)
# ---------------------------------------------------------------------------------------------
def _weights_init(m):
    if isinstance(m, nn.Linear) or isinstance(m, nn.Conv2d):
        init.kaiming_normal_(m.weight)


class LambdaLayer(nn.Module):
    def __init__(self, lambd):
        super(LambdaLayer, self).__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, option='A'):
        super(BasicBlock, self).__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if option == 'A':
                # subsample by 2 and pad planes//4 zero channels before and after
                self.shortcut = LambdaLayer(lambda x:
                                            F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4),
                                                  "constant", 0))
            elif option == 'B':
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(self.expansion * planes)
                )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10, option='A'):
        super(ResNet, self).__init__()
        self.in_planes = 16
        self.option = option

        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(block, 16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 64, num_blocks[2], stride=2)
        self.linear = nn.Linear(64, num_classes)

        self.apply(_weights_init)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1]*(num_blocks-1)
        layers = []
        for stride in strides:
            layers.append(block(self.in_planes, planes, stride, self.option))
            self.in_planes = planes * block.expansion

        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        out = self.linear(out)
        return out


def resnet20(**kw):
    return ResNet(BasicBlock, [3, 3, 3], **kw)


def resnet32(**kw):
    return ResNet(BasicBlock, [5, 5, 5], **kw)


def resnet56(**kw):
    return ResNet(BasicBlock, [9, 9, 9], **kw)


# ---------------------------------------------------------------------------------------------
# shrinkbench MNIST CNN
# ---------------------------------------------------------------------------------------------
class MnistNet(nn.Module):
    def __init__(self):
        super(MnistNet, self).__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.fc1 = nn.Linear(4*4*50, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2, 2)
        x = x.view(-1, 4*4*50)
        x = F.relu(self.fc1(x))
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


# ---------------------------------------------------------------------------------------------
# checkpoint loading
# ---------------------------------------------------------------------------------------------
def load_state(model: nn.Module, path: Path) -> nn.Module:
    """Load a checkpoint (plain state_dict or ``{'state_dict': ...}``) into ``model``: ``module.`` prefixes
    are stripped; only missing ``num_batches_tracked`` buffers are tolerated. Returns the model in eval mode."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["state_dict"] if isinstance(ckpt, dict) and "state_dict" in ckpt else ckpt
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{path.name}: missing keys {missing}, unexpected keys {result.unexpected_keys}")
    return model.eval()


@functools.lru_cache(maxsize=None)
def _resnet_cached(depth: int) -> nn.Module:
    model = {20: resnet20, 32: resnet32, 56: resnet56}[depth]()
    return load_state(model, shared_file(RESNET_FILES[depth]))


def load_resnet(depth: int) -> nn.Module:
    """Pretrained akamaster ResNet-``depth`` (20, 32 or 56), eval mode (cached; do not modify it)."""
    return _resnet_cached(depth)


@functools.lru_cache(maxsize=None)
def load_mnistnet() -> nn.Module:
    """Pretrained shrinkbench MNIST CNN, eval mode (cached; do not modify it)."""
    return load_state(MnistNet(), shared_file(MNISTNET_FILE))


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _npz_arrays(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(shared_file(name)) as data:
        return data[f"x_{split}"], data[f"y_{split}"]


def _select(n: int, count: int | None, stride: int, start: int) -> np.ndarray:
    idx = np.arange(start, n, stride)
    return idx if count is None else idx[:count]


def cifar10_test(count: int | None = None, *, stride: int = 1, start: int = 0,
                 split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 images ``start, start+stride, ...`` (at most ``count``): x/255, ImageNet mean/std
    normalization, NCHW float32; labels int64. The split is class-sorted: use a stride for a mixed subset."""
    x, y = _npz_arrays("cifar10.npz", split)
    idx = _select(len(x), count, stride, start)
    xs = x[idx].astype(np.float32) / 255.0
    xs = (xs - np.asarray(CIFAR_MEAN, np.float32)) / np.asarray(CIFAR_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(xs.transpose(0, 3, 1, 2))), torch.from_numpy(y[idx].astype(np.int64))


def mnist_test(count: int | None = None, *, stride: int = 1, start: int = 0,
               split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images (as :func:`cifar10_test`): x/255, (x − 0.1307)/0.3081, shape (N, 1, 28, 28) float32."""
    x, y = _npz_arrays("mnist.npz", split)
    idx = _select(len(x), count, stride, start)
    xs = (x[idx].astype(np.float32) / 255.0 - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return torch.from_numpy(np.ascontiguousarray(xs[:, None])), torch.from_numpy(y[idx].astype(np.int64))
