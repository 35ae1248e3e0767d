"""Data-parallel evaluation (msat_lava.distributed) under torchrun with 2 processes (gloo, 127.0.0.1 only).

Independent expectation: an N-process run writes the same numbers as one process (only wall-time fields, the
output path and the record of the launch differ); the sharding covers every sample exactly once in whole chunks
for any n and world size; a failure on one rank makes every rank exit non-zero, promptly.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import _nets
from msat_lava import distributed
from msat_lava.distributed import Context, chunk_range, concat_results, fingerprint, n_chunks, sample_range

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 150      # a whole multi-process launch
EXCHANGE_TIMEOUT_S = 60  # MSAT_DIST_TIMEOUT_S of the launched ranks
WALL_KEYS = {"wall_s", "total_s", "convert_s", "ms_per_sample_step"}
LAUNCH_KEYS = {"distributed", "files", "command"}  # where the files went and how the run was launched
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                 "MASTER_PORT", "TORCHELASTIC_RUN_ID")


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
               MSAT_DIST_TIMEOUT_S=str(EXCHANGE_TIMEOUT_S),
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def launch(argv: list[str], world: int = 2) -> list[tuple[int, str, str]]:
    """Start ``world`` ranks of ``python argv`` with the variables torchrun sets (no launcher: it would stop the
    other ranks itself, and here the ranks must stop each other); (exit code, stdout, stderr) per rank."""
    env = _env()
    env.update(WORLD_SIZE=str(world), MASTER_PORT=str(free_port()))
    procs = [subprocess.Popen([sys.executable, *argv], cwd=ROOT, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    out = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=RUN_TIMEOUT_S)
            out.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def torchrun(argv: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", *argv]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def assert_same(a, b, path: str = "", ignore: frozenset = frozenset()) -> None:
    """Field by field: the same keys, types and values (floats bit for bit), except keys in ``ignore``."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        for k in sorted(k for k in keys if k not in ignore and f"{path}/{k}" not in ignore):
            assert k in a and k in b, f"{path}/{k} missing on one side"
            assert_same(a[k], b[k], f"{path}/{k}", ignore)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: lengths {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]", ignore)
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} vs {b!r}"


# ----------------------------------------------------------------------------------------------------------
# sharding and merging (one process)
# ----------------------------------------------------------------------------------------------------------
def test_sample_ranges_cover_every_sample_once_in_whole_chunks():
    for n in range(0, 30):
        for chunk in (1, 2, 3, 7, 32):
            for world in (1, 2, 3, 5, 8):
                ranges = [sample_range(n, chunk, r, world) for r in range(world)]
                assert ranges[0][0] == 0 and ranges[-1][1] == n
                for (lo, hi), (lo2, _) in zip(ranges, ranges[1:]):
                    assert hi == lo2 and lo <= hi  # contiguous, in rank order
                for lo, hi in ranges:
                    assert lo % chunk == 0 and (hi % chunk == 0 or hi == n)  # whole chunks
                sizes = [len(chunk_range(n_chunks(n, chunk), r, world)) for r in range(world)]
                assert sum(sizes) == n_chunks(n, chunk) and max(sizes) - min(sizes) <= 1
    assert sample_range(3, 4, 0, 2) == (0, 0) and sample_range(3, 4, 1, 2) == (0, 3)  # n < world · chunk
    assert [sample_range(10, 3, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]  # uneven: 1, 1, 2 chunks


@pytest.fixture(scope="module")
def resmix():
    conv = _nets.convert("resmix", "msat", sc=((-1, 0.9),))
    return conv, _nets.random_inputs(conv.program.input_shape, 7, 3)


def _emulated_ranks(world: int):
    """map_chunks as ``world`` ranks would do it: each its own block, the last rank first; results in order."""
    def map_chunks(count, fn):
        done = {}
        for r in reversed(range(world)):
            for c in chunk_range(count, r, world):
                done[c] = fn(c)
        return [done[c] for c in range(count)]
    return map_chunks


@pytest.mark.parametrize("precision, worlds", [("fixed", (2, 3)), ("float", (3,))])
def test_run_statistics_do_not_depend_on_where_the_chunks_ran(resmix, precision, worlds):
    """Per-chunk statistics merged in chunk order = the one-process pass, bit for bit (agreement sums too);
    7 samples in chunks of 2: 4 chunks, 2 + 2 or 1 + 1 + 2 per rank."""
    from msat_lava.sc_calibration import preactivation_fn, run_with_statistics

    conv, x = resmix
    kw = dict(precision=precision, sample_ids=np.arange(7) * 7, window=2, preactivations=preactivation_fn(conv.graph),
              chunk=2, record_lipool=True, agreement_at=(1, 4))
    one = run_with_statistics(conv.program, x, 4, **kw)
    for world in worlds:
        par = run_with_statistics(conv.program, x, 4, map_chunks=_emulated_ranks(world), **kw)
        np.testing.assert_array_equal(par.predictions, one.predictions)
        assert (par.spikes, par.lipool_events, par.saturated, par.input_clipped) == (
            one.spikes, one.lipool_events, one.saturated, one.input_clipped)
        assert par.agreement == one.agreement  # dataclass equality: every float sum identical
        for k in one.sin:
            assert par.sin[k].totals() == one.sin[k].totals()
            np.testing.assert_array_equal(par.sin[k].sin_spikes, one.sin[k].sin_spikes)
    assert run_with_statistics(conv.program, x, 4, map_chunks=lambda count, fn: None, **kw) is None  # rank ≠ 0


def test_concat_results_of_blocks_equal_one_run(resmix):
    from msat_lava.reference import simulate

    conv, x = resmix
    ids = np.arange(7) + 100
    kw = dict(precision="fixed", record_counts=True, record_readout=True, sums_at=(2, 4), progress=False,
              record=[conv.program.neuron_stages[0].name])
    one = simulate(conv.program, x, 4, sample_ids=ids, batch_size=2, **kw)
    blocks = [sample_range(7, 2, r, 3) for r in range(3)]
    par = concat_results([simulate(conv.program, x[lo:hi], 4, sample_ids=ids[lo:hi], batch_size=2, **kw)
                          for lo, hi in blocks if hi > lo])
    np.testing.assert_array_equal(par.predictions, one.predictions)
    np.testing.assert_array_equal(par.readout, one.readout)
    for k in one.spike_counts:
        np.testing.assert_array_equal(par.spike_counts[k], one.spike_counts[k])
    for k in one.traces:
        np.testing.assert_array_equal(par.traces[k], one.traces[k])
    for t in one.payload_sums:
        for k in one.payload_sums[t]:
            np.testing.assert_array_equal(par.payload_sums[t][k], one.payload_sums[t][k])
    assert (par.saturated, par.input_clipped) == (one.saturated, one.input_clipped)


def test_single_process_context_needs_no_process_group(resmix):
    import torch.distributed as dist

    assert not distributed.launched({}) and distributed.launched({"RANK": "0", "WORLD_SIZE": "2"})
    with distributed.session() as ctx:
        assert ctx == Context() and ctx.is_main and not ctx.parallel
        assert ctx.map_chunks(3, lambda c: c + 1) == [1, 2, 3] and ctx.gather("x") == ["x"]
        ctx.check_same(1, "anything")
        assert ctx.device("cuda") == "cuda" and ctx.describe()["world_size"] == 1
    assert not dist.is_initialized()
    conv, _ = resmix
    assert fingerprint(conv.net) == fingerprint(_nets.convert("resmix", "msat", sc=((-1, 0.9),)).net)
    assert fingerprint({"a": np.arange(3)}) != fingerprint({"a": np.arange(3) + 1})
    assert Context(rank=1, world_size=2, local_rank=1).device("cuda") == "cuda:1"


# ----------------------------------------------------------------------------------------------------------
# several processes: failures
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(2 * RUN_TIMEOUT_S)
@pytest.mark.parametrize("scenario, messages", [
    ("chunk_fails", ["rank 0: DistributedError: rank 1 failed: ValueError: boom at chunk 5",
                     "rank 1: ValueError: boom at chunk 5"]),
    ("late", ["rank 0: RuntimeError: disk full while writing",
              "rank 1: DistributedError: rank 0 failed: RuntimeError: disk full while writing"]),
    ("dies", ["rank 0: DistributedError: rank 0 lost contact with the other ranks", None]),
    ("differ", ["the rank numbers differ between ranks", "the rank numbers differ between ranks"]),
])
def test_every_rank_fails_when_one_fails(scenario, messages):
    """Rank 1 failing in its chunk, rank 0 failing after the last exchange, a rank dying, ranks disagreeing:
    every rank exits non-zero with the reason (no waiting for the timeout). Before failing, "late" and "differ"
    gathered the chunks on rank 0 in order (rank 1 printed nothing)."""
    res = launch(["tests/_dist_worker.py", scenario])
    assert all(code != 0 for code, _, _ in res), res
    if scenario in ("late", "differ"):
        assert res[0][1].strip() == "chunks [0, 1, 4, 9, 16, 25, 36] ranks [0, 1]" and res[1][1] == ""
    for (code, out, err), message in zip(res, messages):
        if message is not None:
            assert message in err, (scenario, err)


@pytest.mark.timeout(2 * RUN_TIMEOUT_S)
def test_eval_bad_input_exits_2_on_every_rank(eval_files, tmp_path):
    res = launch(["-m", "msat_lava.cli", "eval", eval_files["net"], "--data", eval_files["data"], "--steps", "3",
                  "--methods", "foo", "--out", str(tmp_path / "o")])
    for code, out, err in res:
        assert code == 2 and err.startswith("msat-lava eval: error: --methods: unknown method 'foo'"), (code, err)
        assert len(err.strip().splitlines()) == 1 and out == ""
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------------------
# several processes: torchrun runs equal one process
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_files(tmp_path_factory):
    """ResMix (msat) file; x_train (40) for calibration, 13 test samples (4 chunks of 4: 8 + 5 per rank)."""
    from netx_export import ann

    root = tmp_path_factory.mktemp("dist_eval")
    conv = _nets.convert("resmix", "msat")
    net = conv.net.save(root / "resmix.net")
    rng = np.random.default_rng(11)
    x_train = rng.standard_normal((40,) + conv.program.input_shape).astype(np.float32)
    x_test = rng.standard_normal((13,) + conv.program.input_shape).astype(np.float32)
    y_test = ann.evaluate(conv.graph, x_test).argmax(1).numpy()
    y_test[:3] = (y_test[:3] + 1) % 5
    data = root / "data.npz"
    np.savez(data, x_train=x_train, y_train=np.zeros(40, np.int64), x_test=x_test, y_test=y_test)
    return {"root": root, "net": str(net), "data": str(data)}


EVAL_ARGS = ["--steps", "10", "--methods", "const,p99.9,msat,msat+sc", "--precision", "both", "--calib-samples",
             "32", "--sc-layers", "all", "--sc-window", "4", "--report-steps", "1,3,4,10", "--batch-size", "4",
             "--threads", "1", "--json"]


@pytest.mark.timeout(2 * RUN_TIMEOUT_S)
def test_eval_two_processes_write_what_one_writes(eval_files, tmp_path):
    """``torchrun --nproc_per_node=2 msat-lava eval`` = ``msat-lava eval``: eval.json field by field (accuracy
    curves, SIN statistics, counts, firing rates, energy, layer agreement, λ, SC p), wall times aside."""
    from msat_lava.cli import main

    one, two = tmp_path / "one", tmp_path / "two"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["eval", eval_files["net"], "--data", eval_files["data"], *EVAL_ARGS, "--out", str(one)]) == 0
    res = torchrun(["-m", "msat_lava.cli", "eval", eval_files["net"], "--data", eval_files["data"], *EVAL_ARGS,
                    "--out", str(two)])
    assert res.returncode == 0, res.stderr[-3000:]
    printed = json.loads(res.stdout)  # rank 0's manifest and nothing else: rank 1 printed nothing
    a = json.loads((one / "eval.json").read_text())
    b = json.loads((two / "eval.json").read_text())
    assert printed == b
    assert (a["distributed"]["world_size"], b["distributed"]["world_size"]) == (1, 2)
    assert b["distributed"]["backend"] == "gloo" and a["data"]["samples"] == 13
    assert_same(a, b, ignore=frozenset(WALL_KEYS | LAUNCH_KEYS | {"/arguments/out"}))
    assert len(a["runs"]) == 8 and a["sc_calibration"]["msat+sc"]["p"]  # what was compared is really there
    for name in ("accuracy_vs_T.png", "sin_ratio.png", "report.html"):
        assert (two / name).is_file()
    assert not list(two.glob(".*"))  # written once, atomically: no temporary files left


@pytest.mark.timeout(2 * RUN_TIMEOUT_S)
def test_accuracy_benchmark_two_processes_write_what_one_writes(tmp_path):
    """``torchrun --nproc_per_node=2 benchmarks/accuracy.py`` = one process (MNIST CNN, 20 images, 8 steps,
    batches of 6: 2 + 2 batches, the last one short), spike confidence (its calibration and gate) included."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import accuracy

    args = ["--model", "mnist", "--samples", "20", "--steps", "8", "--methods", "const,msat-norm+h,msat+sc", "--precision",
            "fixed,float", "--calib", "32", "--threads", "1", "--batch-size", "6", "--report-steps", "2,4,8"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert accuracy.main(args + ["--out", str(tmp_path / "one")]) == 0
    res = torchrun(["benchmarks/accuracy.py", *args, "--out", str(tmp_path / "two")])
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(res.stdout.strip().splitlines()) == 6  # one line per row, from rank 0 only
    a = json.loads((tmp_path / "one.json").read_text())
    b = json.loads((tmp_path / "two.json").read_text())
    assert b["distributed"]["world_size"] == 2 and a["samples"] == 20
    sc = [r["spike_confidence"] for r in a["results"] if r["method"] == "msat+sc"]
    assert len(sc) == 2 and all(0 < p < 1 for s in sc for p in s["p"].values())
    assert_same(a, b, ignore=frozenset(WALL_KEYS | LAUNCH_KEYS))
    assert (tmp_path / "two.png").is_file()
