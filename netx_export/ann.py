"""Evaluate an :class:`~netx_export.ir.Graph` as an ANN in torch.

Each node computes its ANN meaning (``netx_export.ir`` module docstring) on a batch: the input is
``(B, *graph.input.shape)`` and every node's value is ``(B, *graph.shape(name))``. Default precision is
float64. Used for the logits check against the original model, for calibration
(:mod:`netx_export.calibrate`) and for SIN statistics: the pre-activation z of a ``relu`` node is the value
of its input node (:func:`relu_inputs`).

Intermediate values are freed as soon as no later node needs them, unless they were asked for.

:meth:`AnnRunner.map` evaluates a stream of batches in parallel over batches (one torch thread per batch)
instead of inside each op; that is what calibration uses.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from netx_export import ir
from netx_export.errors import GraphError

__all__ = ["AnnRunner", "evaluate", "relu_inputs"]


def relu_inputs(graph: ir.Graph) -> dict[str, str]:
    """Map each ``relu`` node (spiking layer) to the node whose value is its pre-activation z."""
    return {n.name: n.inputs[0] for n in graph.nodes if isinstance(n, ir.Relu)}


class AnnRunner:
    """A graph prepared for repeated evaluation: parameters converted once to torch tensors of ``dtype``
    on ``device``. Calling it is the same as :func:`evaluate`."""

    def __init__(self, graph: ir.Graph, *, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu") -> None:
        if not isinstance(graph, ir.Graph):
            raise TypeError(f"graph must be a netx_export.ir.Graph, got {type(graph).__name__}")
        self.graph = graph
        self.dtype = dtype
        self.device = torch.device(device)
        self._params: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for node in graph.nodes:
            if isinstance(node, (ir.Conv, ir.Linear)):
                w = torch.tensor(np.array(node.weight), dtype=dtype, device=self.device)
                b = (None if node.bias is None
                     else torch.tensor(np.array(node.bias), dtype=dtype, device=self.device))
                self._params[node.name] = (w, b)
        last_use: dict[str, int] = {}
        for i, node in enumerate(graph.nodes):
            for src in node.inputs:
                last_use[src] = i
        self._last_use = last_use

    def _check_input(self, x) -> torch.Tensor:
        x = torch.as_tensor(x)
        want = self.graph.input.shape
        if x.dim() != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise GraphError(f"expected a batch of shape (B, {', '.join(map(str, want))}), got {tuple(x.shape)}",
                             node=self.graph.input.name, field="shape")
        return x.to(device=self.device, dtype=self.dtype)

    def __call__(self, x, *, record: bool | Iterable[str] = False
                 ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Output for batch ``x``; with ``record`` also ``{name: value}`` for every node (True) or for the
        named nodes (an iterable of names)."""
        graph = self.graph
        wanted = record is not False and record is not None
        if record is True:
            keep = {n.name for n in graph.nodes}
        elif record is False or record is None:
            keep = set()
        else:
            keep = set(record)
            unknown = keep - {n.name for n in graph.nodes}
            if unknown:
                raise GraphError(f"cannot record unknown node(s) {sorted(unknown)}", field="record")
        x = self._check_input(x)
        env: dict[str, torch.Tensor] = {}
        recorded: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for i, node in enumerate(graph.nodes):
                args = [env[s] for s in node.inputs]
                value = x if isinstance(node, ir.Input) else self._apply(node, args)
                env[node.name] = value
                if node.name in keep:
                    recorded[node.name] = value
                for src in set(node.inputs):
                    if self._last_use[src] == i:
                        del env[src]
        out = env[graph.output.name]
        return (out, recorded) if wanted else out

    def map(self, batches: Iterable, *, record: bool | Iterable[str] = False, workers: int | None = None
            ) -> Iterator[torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """``self(x, record=record)`` for each batch ``x`` of ``batches``, yielded in order, computed by
        ``workers`` threads (default ``torch.get_num_threads()``) that each evaluate whole batches with
        single-threaded torch ops.

        Parallel over batches rather than inside each op: no op needs a thread team (each multi-threaded op
        is a fork/join, which stalls whenever another process holds one of the cores: a 2-core ResNet56
        calibration ran 4x slower that way on a shared machine). The values are those of a plain call per
        batch: each op computes a sample from that sample alone, and the CPU kernels give the same result on
        one thread as on several (tests compare). At most ``2 * workers`` batches are in flight (taken from
        ``batches`` lazily). While the generator runs, ``torch.set_num_threads(1)`` is in effect (the
        caller's ops between two results are single-threaded too); the previous count is restored when it
        ends or is closed.
        """
        threads = torch.get_num_threads()
        workers = threads if workers is None else int(workers)
        if workers <= 1:
            for x in batches:
                yield self(x, record=record)
            return
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                pending: deque = deque()
                try:
                    for x in batches:
                        pending.append(pool.submit(self, x, record=record))
                        if len(pending) >= 2 * workers:
                            yield pending.popleft().result()
                    while pending:
                        yield pending.popleft().result()
                finally:
                    for future in pending:
                        future.cancel()
        finally:
            torch.set_num_threads(threads)

    def _apply(self, node: ir.Node, args: list[torch.Tensor]) -> torch.Tensor:
        x = args[0] if args else None
        if isinstance(node, ir.Conv):
            w, b = self._params[node.name]
            return F.conv2d(x, w, b, stride=node.stride, padding=node.padding, groups=node.groups)
        if isinstance(node, ir.Linear):
            w, b = self._params[node.name]
            return F.linear(x, w, b)
        if isinstance(node, ir.Relu):
            return torch.relu(x)
        if isinstance(node, ir.MaxPool):
            return F.max_pool2d(x, node.kernel, node.stride, node.padding)
        if isinstance(node, ir.AvgPool):
            return F.avg_pool2d(x, node.kernel, node.stride, node.padding, count_include_pad=True)
        if isinstance(node, ir.Flatten):
            return x.reshape(x.shape[0], -1)
        if isinstance(node, ir.Add):
            out = args[0]
            for a in args[1:]:
                out = out + a
            return out
        if isinstance(node, ir.Subsample):
            return x[:, :, ::node.step[0], ::node.step[1]]
        if isinstance(node, ir.ChanPad):
            return F.pad(x, (0, 0, 0, 0, node.before, node.after))
        raise GraphError(f"no ANN meaning for node kind {node.kind!r}", node=node.name)  # pragma: no cover


def evaluate(graph: ir.Graph, x, *, dtype: torch.dtype = torch.float64,
             record: bool | Iterable[str] = False) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Evaluate ``graph`` as an ANN on the batch ``x`` (torch tensor or numpy array, shape
    ``(B, *graph.input.shape)``) in ``dtype``.

    Returns the output tensor ``(B, *graph.shape(output))``; with ``record=True`` returns
    ``(output, {name: value})`` for every node, with an iterable of names only for those nodes.
    """
    return AnnRunner(graph, dtype=dtype)(x, record=record)
