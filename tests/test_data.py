"""msat_lava.data: .npz layouts, layout conversion, normalization, strided subsets and typed errors."""
from __future__ import annotations

import numpy as np
import pytest

from msat_lava.data import DataError, load_npz, normalize, parse_floats, strided_indices, to_nchw


def _save(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_x_y_layout_float_nchw_kept(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 2, 4, 4)).astype(np.float32)
    y = np.arange(5)
    d = load_npz(_save(tmp_path, x=x, y=y))
    assert d.x.dtype == np.float32 and d.x.shape == (5, 2, 4, 4)
    np.testing.assert_array_equal(d.x, x)            # float data: scale 1, no normalization
    np.testing.assert_array_equal(d.y, y)
    np.testing.assert_array_equal(d.indices, np.arange(5))


def test_x_without_labels(tmp_path):
    d = load_npz(_save(tmp_path, x=np.zeros((3, 6), np.float32)))
    assert d.y is None and d.x.shape == (3, 6)


def test_train_test_layout_uses_test_split_and_hwc_uint8(tmp_path):
    rng = np.random.default_rng(1)
    xtr = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    xte = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    path = _save(tmp_path, x_train=xtr, y_train=np.arange(7), x_test=xte, y_test=np.array([3, 2, 1, 0]))
    d = load_npz(path)
    assert d.x.shape == (4, 3, 8, 8)
    np.testing.assert_allclose(d.x, xte.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    np.testing.assert_array_equal(d.y, [3, 2, 1, 0])
    tr = load_npz(path, split="train")
    assert tr.x.shape == (7, 3, 8, 8) and tr.y.tolist() == list(range(7))


def test_grayscale_nhw_gets_channel_and_mean_std(tmp_path):
    x = np.full((2, 6, 6), 255, np.uint8)
    d = load_npz(_save(tmp_path, x=x), mean=[0.5], std=[0.25])
    assert d.x.shape == (2, 1, 6, 6)
    np.testing.assert_allclose(d.x, 2.0)              # (1 − 0.5) / 0.25


def test_per_channel_normalization_and_input_scale(tmp_path):
    x = np.ones((1, 5, 5, 3), np.uint8) * np.array([10, 20, 30], np.uint8)
    d = load_npz(_save(tmp_path, x=x), input_scale=10, mean=[1, 1, 1], std=[1, 2, 4])
    np.testing.assert_allclose(d.x[0, :, 0, 0], [0.0, 0.5, 0.5])


def test_input_shape_hint_decides_layout(tmp_path):
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)   # ambiguous small HWC (H=3, W=2, C=2)
    path = _save(tmp_path, x=x)
    assert load_npz(path).x.shape == (2, 3, 2, 2)                          # default: kept
    hinted = load_npz(path, input_shape=(2, 3, 2))                         # network says (C=2, H=3, W=2)
    np.testing.assert_array_equal(hinted.x, x.transpose(0, 3, 1, 2))
    flat = load_npz(path, input_shape=(12,))
    assert flat.x.shape == (2, 12)
    with pytest.raises(DataError, match=r"do not fit the network input \(5,\)"):
        load_npz(path, input_shape=(5,))


def test_strided_subset_covers_every_class_of_a_sorted_split(tmp_path):
    y = np.repeat(np.arange(10), 100)                                      # class-sorted, like CIFAR-10 test
    x = np.zeros((1000, 4, 4), np.uint8)
    d = load_npz(_save(tmp_path, x_test=x, y_test=y), samples=20)
    assert d.indices.tolist() == list(range(0, 1000, 50))
    assert np.bincount(d.y, minlength=10).tolist() == [2] * 10
    again = load_npz(tmp_path / "d.npz", samples=20)
    np.testing.assert_array_equal(again.indices, d.indices)              # deterministic
    assert len(load_npz(tmp_path / "d.npz", samples=5000).indices) == 1000  # more than available: all


def test_strided_indices():
    assert strided_indices(10, 3).tolist() == [0, 3, 6]
    assert strided_indices(4, None).tolist() == [0, 1, 2, 3]
    assert strided_indices(4, 4).tolist() == [0, 1, 2, 3]
    idx = strided_indices(10000, 7)
    assert len(set(idx.tolist())) == 7 and idx.max() < 10000
    with pytest.raises(DataError):
        strided_indices(10, 0)


def test_cifar_test_split_strided_subset_has_every_class(shared_data_dir):
    d = load_npz(shared_data_dir / "cifar10.npz", samples=50, mean=[0.485, 0.456, 0.406],
                 std=[0.229, 0.224, 0.225])
    assert d.x.shape == (50, 3, 32, 32) and d.x.dtype == np.float32
    assert np.bincount(d.y, minlength=10).tolist() == [5] * 10
    assert d.indices[-1] < 10000


# ---------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file") as info:
        load_npz(tmp_path / "nope.npz")
    assert info.value.path.endswith("nope.npz")


def test_not_an_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match="bad.npz"):
        load_npz(path)
    np.save(tmp_path / "single.npy", np.zeros((2, 3)))
    with pytest.raises(DataError, match="not an .npz archive"):
        load_npz(tmp_path / "single.npy")


def test_missing_key_names_key_and_lists_keys(tmp_path):
    path = _save(tmp_path, images=np.zeros((2, 3)))
    with pytest.raises(DataError, match=r"key 'x_test'.*keys: \['images'\]") as info:
        load_npz(path)
    assert info.value.key == "x_test"


def test_pickled_object_array_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="unpickling") as info:
        load_npz(path)
    assert info.value.key == "x"


def test_label_problems(tmp_path):
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(DataError, match=r"key 'y'.*shape \(2,\)"):
        load_npz(_save(tmp_path, x=x, y=np.arange(2)))
    with pytest.raises(DataError, match="integers"):
        load_npz(_save(tmp_path, "f.npz", x=x, y=np.array([0.5, 1, 2])))
    with pytest.raises(DataError, match=">= 0"):
        load_npz(_save(tmp_path, "n.npz", x=x, y=np.array([0, -1, 2])))


def test_bad_values_and_options(tmp_path):
    with pytest.raises(DataError, match="NaN"):
        load_npz(_save(tmp_path, x=np.array([[np.nan, 1.0]])))
    with pytest.raises(DataError, match="numeric"):
        load_npz(_save(tmp_path, "s.npz", x=np.array([["a", "b"]])))
    path = _save(tmp_path, "ok.npz", x=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="2 value"):
        load_npz(path, mean=[0.1, 0.2])
    with pytest.raises(DataError, match="std"):
        load_npz(path, std=[0.0])
    with pytest.raises(DataError, match="input scale"):
        load_npz(path, input_scale=0)
    with pytest.raises(DataError, match="split"):
        load_npz(path, split="val")
    with pytest.raises(DataError, match="samples"):
        load_npz(path, samples=0)


def test_helpers():
    assert parse_floats("0.1, 0.2,0.3") == [0.1, 0.2, 0.3]
    assert parse_floats(None) is None
    with pytest.raises(DataError):
        parse_floats("a,b")
    assert to_nchw(np.zeros((2, 5, 5))).shape == (2, 1, 5, 5)
    assert to_nchw(np.zeros((2, 3, 5, 5))).shape == (2, 3, 5, 5)
    assert to_nchw(np.zeros((2, 5, 5, 3))).shape == (2, 3, 5, 5)
    out = normalize(np.full((1, 2), 128, np.uint8))
    np.testing.assert_allclose(out, 128 / 255)
