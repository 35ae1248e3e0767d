"""Data-parallel evaluation under ``torchrun`` (torch.distributed): sharding, gathering, failure propagation.

``msat-lava eval`` and ``benchmarks/accuracy.py`` run unchanged as one process; launched by ``torchrun
--nproc_per_node=N`` (or ``python -m torch.distributed.run``, any ``--nnodes``) they split the simulation of the
evaluated samples over the N processes and rank 0 writes the result, which is identical to the single-process
one (docs/DESIGN.md, "Data-parallel evaluation").

* **Launch detection**: RANK and WORLD_SIZE in the environment (torchrun sets them, with LOCAL_RANK,
  MASTER_ADDR and MASTER_PORT). Without them — or with WORLD_SIZE = 1 — :func:`session` yields the
  single-process :class:`Context` and no process group is created: everything runs as before.
* **Backend**: gloo; ``cpu:gloo,cuda:nccl`` when the run uses a CUDA device and CUDA is available (each rank then
  uses ``cuda:LOCAL_RANK``, :meth:`Context.device`). The gathered results are CPU objects, so they always travel
  over gloo.
* **Sharding** (:func:`chunk_range`, :func:`sample_range`): the samples, in their evaluation order, are cut into
  chunks of B consecutive samples (B = ``--batch-size``, the simulator's chunk; the last chunk may be shorter);
  of the C = ⌈n/B⌉ chunks rank r takes the contiguous block ⌊r·C/N⌋ .. ⌊(r+1)·C/N⌋ − 1 (ranks differ by at most
  one chunk; with C < N some ranks get none). Every chunk is therefore simulated exactly as in a single-process
  run — same samples, same batch — wherever it runs.
* **Gathering** (:meth:`Context.map_chunks`, :meth:`Context.gather`, :func:`simulate`): rank 0 receives every
  rank's per-chunk results and concatenates them in chunk order; every aggregate (accuracy curves, spike totals,
  SIN counts, LIPool events, layer-agreement moments) is then computed on rank 0 from the gathered per-chunk
  data in the same order as a single process computes it, so the numbers are bit-identical. Other ranks get
  None and write nothing.
* **Failures**: every exchange starts with a status round (all ranks send "ok" or their error message); a rank
  whose work raised sends its message, the others raise :class:`DistributedError` naming it, and every rank
  exits non-zero. A rank that leaves without a word (killed) breaks the gloo connections: the others' next
  exchange fails at once ("connection closed by peer"), and torchrun stops the rest of a node's workers. Every
  exchange has a timeout (:data:`ENV_TIMEOUT`, default :data:`DEFAULT_TIMEOUT_S` s), so nothing waits forever.
  :func:`session` ends with a last status round, so that a rank-0 failure while writing the outputs makes every
  rank fail.
* **Quiet ranks**: ranks other than 0 print nothing but errors (:meth:`Context.log`; Python warnings are
  ignored there — rank 0 shows the same ones).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["Context", "DistributedError", "session", "launched", "chunk_range", "sample_range", "n_chunks",
           "simulate", "concat_results", "fingerprint", "ENV_TIMEOUT", "DEFAULT_TIMEOUT_S", "SHARDING"]

#: environment variable: seconds a rank waits for the others at an exchange (and for the process group to form)
ENV_TIMEOUT = "MSAT_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3600.0
#: how the samples are split, as recorded in the result files
SHARDING = ("contiguous blocks of whole chunks of --batch-size samples in evaluation order; rank r of N takes "
            "chunks floor(r*C/N) .. floor((r+1)*C/N)-1 of C; results gathered on rank 0 in chunk order")


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class DistributedError(RuntimeError):
    """Another rank failed (its message is quoted), the ranks disagree, or the ranks lost contact."""


def launched(env: Mapping[str, str] | None = None) -> bool:
    """True when this process was started by torchrun (RANK and WORLD_SIZE are set)."""
    env = os.environ if env is None else env
    return "RANK" in env and "WORLD_SIZE" in env


# ----------------------------------------------------------------------------------------------------------
# sharding (pure functions)
# ----------------------------------------------------------------------------------------------------------
def n_chunks(n: int, chunk: int) -> int:
    """C = ⌈n / chunk⌉ chunks of ``chunk`` consecutive samples."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return -(-int(n) // int(chunk))


def chunk_range(count: int, rank: int, world_size: int) -> range:
    """The chunks of rank ``rank`` of ``world_size``: the contiguous block ⌊r·C/N⌋ .. ⌊(r+1)·C/N⌋ − 1."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size}")
    return range(count * rank // world_size, count * (rank + 1) // world_size)


def sample_range(n: int, chunk: int, rank: int, world_size: int) -> tuple[int, int]:
    """(lo, hi): positions lo..hi−1 of the n samples that rank ``rank`` simulates (whole chunks, contiguous)."""
    r = chunk_range(n_chunks(n, chunk), rank, world_size)
    return min(n, r.start * chunk), min(n, r.stop * chunk)


# ----------------------------------------------------------------------------------------------------------
# the context
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """Where this process stands: rank, world size, local rank (GPU index), backend (None: single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that computes the aggregates, prints and writes."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def describe(self) -> dict[str, Any]:
        """JSON-ready record for result files."""
        return {"world_size": self.world_size, "backend": self.backend,
                "sharding": SHARDING if self.parallel else None}

    def device(self, requested: str | None) -> str | None:
        """The device of this rank: a plain ``cuda`` becomes ``cuda:LOCAL_RANK`` in a parallel run."""
        if self.parallel and requested == "cuda":
            return f"cuda:{self.local_rank}"
        return requested

    def log(self, message: str) -> None:
        """Print ``message`` on rank 0 only."""
        if self.is_main:
            print(message, flush=True)

    def samples(self, n: int, chunk: int) -> tuple[int, int]:
        """(lo, hi): this rank's positions of n samples in chunks of ``chunk`` (:func:`sample_range`)."""
        return sample_range(n, chunk, self.rank, self.world_size)

    # ---- exchanges ----------------------------------------------------------------------------------------
    def _round(self, error: str | None, value: Any = None) -> list[Any]:
        """All-gather (error, value); raise DistributedError if another rank reports an error."""
        if not self.parallel:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(out, (error, value))
        except Exception as exc:
            raise DistributedError(f"rank {self.rank} lost contact with the other ranks: "
                                   f"{_first_line(exc)}") from exc
        failed = [(r, e) for r, (e, _) in enumerate(out) if e is not None and r != self.rank]
        if failed:
            r, e = failed[0]
            raise DistributedError(f"rank {r} failed: {e}" + (f" (and {len(failed) - 1} more rank(s))"
                                                              if len(failed) > 1 else ""))
        return [v for _, v in out]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0, in rank order; None on the other ranks. ``obj`` may be an
        exception raised by this rank's work: it is reported to the others and raised here."""
        error = obj if isinstance(obj, BaseException) else None
        self._round(None if error is None else _first_line(error))
        if error is not None:
            with contextlib.suppress(Exception):
                error.msat_reported = True  # session() does not report it a second time
            raise error
        if not self.parallel:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        try:
            dist.gather_object(obj, out, dst=0)
        except Exception as exc:
            raise DistributedError(f"rank {self.rank}: gathering the results failed: {_first_line(exc)}") from exc
        return out

    def map_chunks(self, count: int, fn: Callable[[int], Any]) -> list[Any] | None:
        """[fn(c) for c in range(count)] computed data-parallel: this rank evaluates its :func:`chunk_range`,
        rank 0 returns all results in chunk order, the other ranks None. Single process: the plain list."""
        if not self.parallel:
            return [fn(c) for c in range(count)]
        try:
            mine: Any = [fn(c) for c in chunk_range(count, self.rank, self.world_size)]
        except Exception as exc:  # reported to the other ranks, then raised here
            mine = exc
        parts = self.gather(mine)
        return None if parts is None else [item for part in parts for item in part]

    def check_same(self, value: Any, what: str) -> None:
        """Raise DistributedError unless every rank holds the same ``value`` (compared by :func:`fingerprint`)."""
        digest = fingerprint(value)
        digests = self._round(None, digest)
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        if odd:
            raise DistributedError(f"{what} differ between ranks (rank {odd[0]} vs rank 0): the computation before "
                                   "the simulation is not deterministic here")

    def finish(self) -> None:
        """Last status round: returns when every rank finished without error."""
        self._round(None)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _timeout_s(timeout_s: float | None) -> float:
    if timeout_s is not None:
        return float(timeout_s)
    text = os.environ.get(ENV_TIMEOUT)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        from msat_lava.cli_common import BadInput

        raise BadInput(f"{ENV_TIMEOUT} must be a positive number of seconds, got {text!r}")
    return value


def _backend(device: str | None) -> str:
    import torch

    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


@contextlib.contextmanager
def session(*, device: str | None = None, timeout_s: float | None = None) -> Iterator[Context]:
    """The :class:`Context` of this process, with the process group set up for the block when torchrun
    launched more than one process (module docstring); ``device`` = the run's torch device (CUDA → nccl too).

    On a clean exit all ranks meet once more (:meth:`Context.finish`): if any rank failed, the others raise
    DistributedError. On an exception this rank tells the others (unless the exception came from the other
    ranks) and re-raises it. The process group is destroyed at the end."""
    env = os.environ
    if not launched() or int(env.get("WORLD_SIZE", "1")) <= 1:
        yield Context()
        return
    import torch
    import torch.distributed as dist

    from msat_lava.cli_common import BadInput

    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    local = int(env.get("LOCAL_RANK", "0"))
    timeout = _timeout_s(timeout_s)
    backend = _backend(device)
    owns = not dist.is_initialized()
    if owns:
        if "cuda" in backend:
            torch.cuda.set_device(local)
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
        except ValueError as exc:  # env:// without MASTER_ADDR / MASTER_PORT
            raise BadInput(f"torch.distributed: {exc} (launch with torchrun)") from None
    ctx = Context(rank=rank, world_size=world, local_rank=local, backend=backend, timeout_s=timeout)
    with contextlib.ExitStack() as stack:
        if not ctx.is_main:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        try:
            yield ctx
        except BaseException as exc:
            if not isinstance(exc, DistributedError) and not getattr(exc, "msat_reported", False):
                with contextlib.suppress(Exception):
                    ctx._round(_first_line(exc) if not isinstance(exc, SystemExit) else
                               f"exited with code {exc.code}")
            raise
        else:
            ctx.finish()
        finally:
            if owns and dist.is_initialized():
                dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------
# the reference simulator, data-parallel
# ----------------------------------------------------------------------------------------------------------
def simulate(ctx: Context, program: Any, x: np.ndarray, steps: int, *, batch_size: int,
             sample_ids: Sequence[int] | None = None, **kwargs: Any):
    """:func:`msat_lava.reference.simulate` of ``x`` split over the ranks: this rank simulates its block of
    whole batches (:meth:`Context.samples`), rank 0 returns the :class:`~msat_lava.reference.RunResult` of
    all samples (:func:`concat_results`, in order), the other ranks None. ``progress`` is forced off on ranks
    other than 0. Single process: exactly ``reference.simulate(...)``."""
    from msat_lava import reference

    ids = np.arange(len(x), dtype=np.int64) if sample_ids is None else np.asarray(sample_ids)
    if not ctx.parallel:
        return reference.simulate(program, x, steps, batch_size=batch_size, sample_ids=ids, **kwargs)
    if not ctx.is_main:
        kwargs["progress"] = False
    lo, hi = ctx.samples(len(x), batch_size)
    try:
        part: Any = (reference.simulate(program, x[lo:hi], steps, batch_size=batch_size, sample_ids=ids[lo:hi],
                                        **kwargs) if hi > lo else None)
    except Exception as exc:
        part = exc
    parts = ctx.gather(part)
    return None if parts is None else concat_results([p for p in parts if p is not None])


def concat_results(parts: Sequence[Any]):
    """One :class:`~msat_lava.reference.RunResult` from the results of consecutive blocks of samples (in
    order): per-sample arrays concatenated along the sample axis, counters summed (exact integers)."""
    from msat_lava.reference import RunResult

    if not parts:
        raise ValueError("no results to concatenate")
    first = parts[0]
    known = {"precision", "steps", "predictions", "readout", "spike_counts", "traces", "payload_sums", "membrane",
             "input_clipped", "saturated"}
    for f in dataclasses.fields(first):
        if f.name not in known:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if any(not _equal(getattr(p, f.name), default) for p in parts):
                raise TypeError(f"concat_results: do not know how to merge RunResult.{f.name}")

    def cat(values, axis):
        return np.concatenate([np.asarray(v) for v in values], axis=axis)

    def per_key(get, axis):
        dicts = [get(p) for p in parts]
        return {k: cat([d[k] for d in dicts], axis) for k in dicts[0]}

    def nested(get, axis):
        dicts = [get(p) for p in parts]
        return {k: {s: cat([d[k][s] for d in dicts], axis) for s in dicts[0][k]} for k in dicts[0]}

    return RunResult(
        precision=first.precision, steps=first.steps,
        predictions=cat([p.predictions for p in parts], 1),
        readout=None if first.readout is None else cat([p.readout for p in parts], 1),
        spike_counts=per_key(lambda p: p.spike_counts, 0), traces=per_key(lambda p: p.traces, 1),
        payload_sums=nested(lambda p: p.payload_sums, 0), membrane=nested(lambda p: p.membrane, 0),
        input_clipped=int(sum(int(p.input_clipped) for p in parts)),
        saturated={k: int(sum(int(p.saturated[k]) for p in parts)) for k in first.saturated})


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------------------
# fingerprints (are the ranks' networks the same?)
# ----------------------------------------------------------------------------------------------------------
def fingerprint(obj: Any) -> str:
    """SHA-256 of a canonical walk over ``obj``: dataclasses (fields), mappings (items in order), sequences,
    numpy arrays and torch tensors (dtype, shape, bytes), scalars (repr); anything else by ``repr``."""
    h = hashlib.sha256()
    _feed(h, obj, 0)
    return h.hexdigest()


def _feed(h, obj: Any, depth: int) -> None:
    if depth > 64:
        raise ValueError("fingerprint: object nested too deeply")
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, np.ndarray) or type(obj).__module__.startswith("numpy"):
        a = np.ascontiguousarray(np.asarray(obj))
        if a.dtype == object:
            h.update(b"objarray(")
            for v in a.ravel():
                _feed(h, v, depth + 1)
            h.update(b")")
        else:
            h.update(f"nd:{a.dtype.str}{a.shape};".encode())
            h.update(a.tobytes())
    elif type(obj).__module__.startswith("torch") and hasattr(obj, "detach"):
        _feed(h, obj.detach().cpu().numpy(), depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(f"dc:{type(obj).__qualname__}(".encode())
        for f in dataclasses.fields(obj):
            h.update(f"{f.name}=".encode())
            _feed(h, getattr(obj, f.name), depth + 1)
        h.update(b")")
    elif isinstance(obj, Mapping):
        h.update(b"map(")
        for k, v in obj.items():
            _feed(h, k, depth + 1)
            _feed(h, v, depth + 1)
        h.update(b")")
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        h.update(f"{type(obj).__name__}(".encode())
        for v in items:
            _feed(h, v, depth + 1)
        h.update(b")")
    else:  # memory addresses differ between processes: left out
        h.update(f"repr:{type(obj).__qualname__}:{_ADDRESS.sub('', repr(obj))};".encode())
