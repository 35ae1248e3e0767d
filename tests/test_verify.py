"""msat_lava.verify: Lava fixed point vs the reference, bit for bit, first-divergence location, JSON report."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

import _nets
from msat_lava.program import Program
from msat_lava.reference import RunResult, simulate
from msat_lava.verify import compare_fixed_float, compare_outputs, default_report_steps, verify

STEPS = 8
N = 3
IDS = np.array([11, 4, 27])     # dataset indices: keys of the spike-confidence gate
CORRUPT_STAGE = "relu_1"        # second spiking layer of PoolMix (after it: LIPool, relu_2, readout)


@pytest.fixture(scope="module")
def setup():
    conv = _nets.convert("poolmix", "msat", sc=((2, 0.8),))
    x = _nets.random_inputs(conv.program.input_shape, N, seed=7)
    labels = np.array([0, 1, 2])
    return conv.program, x, labels


def _with_bias(program: Program, stage: str, flat: int, value: int) -> Program:
    stages = []
    for s in program.stages:
        if s.name == stage:
            bias = np.array(s.bias_fixed, dtype=np.int64, copy=True)
            bias.reshape(-1)[flat] = value
            s = dataclasses.replace(s, bias_fixed=bias)
        stages.append(s)
    return dataclasses.replace(program, stages=tuple(stages))


def _expected_first(program: Program, x, stage: str) -> tuple[int, int, int, int]:
    """Pick a neuron of ``stage`` that fires, and where silencing it first shows: (flat, step, sample, value).

    Silencing neuron j (a huge negative bias) changes nothing before it would first fire; earlier stages are
    unaffected, and at that step no other neuron of the stage changes. So the first divergence is at the
    earliest step where j fires in any sample, at the lowest such sample, with reference value = its payload."""
    ref = simulate(program, x, STEPS, sample_ids=IDS, record=(stage,), progress=False)
    tr = ref.traces[stage].reshape(STEPS, N, -1)
    fired = (tr > 0).any(axis=(0, 1))
    flat = int(np.flatnonzero(fired)[len(np.flatnonzero(fired)) // 2])
    fires = tr[:, :, flat] > 0
    step = int(np.argmax(fires.any(axis=1)))
    sample = int(np.argmax(fires[step]))
    return flat, step, sample, int(tr[step, sample, flat])


def test_default_report_steps():
    assert default_report_steps(64) == [1, 2, 4, 8, 16, 32, 64]
    assert default_report_steps(20) == [1, 2, 4, 8, 16, 20]
    assert default_report_steps(1) == [1]


def test_membrane_error_is_the_max_and_mean_gap_in_threshold_units_at_the_reported_steps():
    conv = _nets.convert("mlp", "const")
    prog = conv.program
    (hidden,) = [s.name for s in prog.neuron_stages]
    shape = (2,) + prog.stage(hidden).shape
    zeros = np.zeros(shape)

    def run(precision, membrane):
        return RunResult(precision=precision, steps=4, predictions=np.zeros((4, 2), dtype=np.int64),
                         spike_counts={hidden: np.ones(shape, dtype=np.int64)}, membrane=membrane)

    fx2, fl2, fl4 = zeros.copy(), zeros.copy(), zeros.copy()
    fx2[0, 0], fl2[0, 0] = 0.25, 0.75  # gap 0.5 at T = 2
    fl4[1, 1] = -1.0                   # gap 1.0 at T = 4
    fixed = run("fixed", {2: {hidden: fx2}, 4: {hidden: zeros}, 3: {hidden: zeros + 7}})  # T = 3 not reported
    flt = run("float", {2: {hidden: fl2}, 4: {hidden: fl4}, 3: {hidden: zeros}})
    fc = compare_fixed_float(prog, fixed, flt, report_steps=[2, 4])
    assert fc.membrane_error == {hidden: 1.0}
    assert fc.membrane_error_mean[hidden] == pytest.approx(1.5 / (2 * zeros.size))
    # without membrane snapshots at every reported step there is no figure rather than a partial one
    assert compare_fixed_float(prog, fixed, flt, report_steps=[1, 2]).membrane_error is None


def test_compare_outputs_orders_by_step_then_stage_then_sample():
    prog = SimpleNamespace(stages=(SimpleNamespace(name="a", kind="neuron", shape=(2, 3)),
                                   SimpleNamespace(name="b", kind="neuron", shape=(4,)),
                                   SimpleNamespace(name="out", kind="readout", shape=(2,))))
    steps, n = 5, 3
    rng = np.random.default_rng(0)
    ref = SimpleNamespace(predictions=np.zeros((steps, n), np.int64), readout=rng.integers(0, 9, (steps, n, 2)),
                          traces={"a": rng.integers(0, 9, (steps, n, 2, 3)), "b": rng.integers(0, 9, (steps, n, 4))})
    lava = SimpleNamespace(predictions=ref.predictions.copy(), readout=ref.readout.astype(np.float64),
                           traces={k: v.copy() for k, v in ref.traces.items()})
    div, stages, peq, req = compare_outputs(prog, lava, ref, [5, 6, 7])
    assert div is None and peq and req and [s.compared for s in stages] == [90, 60, 30]
    lava.traces["b"][2, 0, 3] += 1      # later stage, earlier step
    lava.traces["a"][3, 0, 0, 0] += 1     # earlier stage, later step
    lava.traces["a"][2, 2, 1, 1] += 1   # earlier stage, same step as b, higher sample
    div, stages, _, _ = compare_outputs(prog, lava, ref, [5, 6, 7])
    assert (div.stage, div.step, div.sample, div.sample_id, div.flat_index, div.index) == ("a", 2, 2, 7, 4, (1, 1))
    assert div.lava == ref.traces["a"][2, 2, 1, 1] + 1 and div.reference == ref.traces["a"][2, 2, 1, 1]
    assert div.mismatches == 2 and [s.mismatches for s in stages] == [2, 1, 0]
    lava.readout[1, 1, 0] += 0.5
    div, _, _, req = compare_outputs(prog, lava, ref)
    assert (div.stage, div.kind, div.step, div.sample) == ("out", "readout", 1, 1) and not req
    del lava.traces["b"]
    div, _, _, _ = compare_outputs(prog, lava, ref)
    assert div.kind == "shape" and div.stage == "b"


@pytest.mark.lava
def test_verify_bit_exact_and_json_report(setup, tmp_path):
    program, x, labels = setup
    report = verify(program, x, STEPS, IDS, labels=labels, report_steps=[4, 8])
    assert report.bit_exact, report.format()
    assert report.divergence is None and report.predictions_equal and report.readout_equal
    assert [s.name for s in report.stages] == [s.name for s in program.stages]
    assert all(s.compared == STEPS * N * int(np.prod(s.shape)) and s.mismatches == 0 for s in report.stages)
    assert report.sample_ids == IDS.tolist() and report.n_samples == N
    assert report.lava_wall_s > 0 and report.lava_wall_per_sample_s == pytest.approx(report.lava_wall_s / N)
    assert set(report.lava_accuracy) == {4, 8} and report.lava_accuracy == report.reference_accuracy
    fc = report.float_comparison
    assert fc is not None and set(fc.accuracy_delta) == {4, 8} and len(fc.accuracy_fixed) == STEPS
    assert set(fc.spike_count_error) == {s.name for s in program.neuron_stages}
    assert all(v is None or v >= 0 for v in fc.spike_count_error.values())
    assert set(fc.saturated) == set(fc.spike_count_error) and fc.input_clipped == 0
    assert fc.readout_max_abs_error[8] >= 0
    assert set(fc.membrane_error) == set(fc.membrane_error_mean) == set(fc.spike_count_error)
    assert all(0 <= fc.membrane_error_mean[k] <= fc.membrane_error[k] for k in fc.membrane_error)
    path = report.to_json(tmp_path / "sub" / "report.json")
    data = json.loads(path.read_text())
    assert data["bit_exact"] is True and data["divergence"] is None
    assert data["float_comparison"]["accuracy_delta"].keys() == {"4", "8"}
    assert not list(path.parent.glob(".*.tmp"))                        # atomic write left no temp file
    assert "BIT-EXACT" in report.format()


@pytest.mark.lava
def test_verify_reports_first_divergence_of_a_corrupted_lava_program(setup):
    program, x, _ = setup
    flat, step, sample, value = _expected_first(program, x, CORRUPT_STAGE)
    corrupted = _with_bias(program, CORRUPT_STAGE, flat, -(1 << 22))      # silence one neuron in the Lava copy
    report = verify(corrupted, x, STEPS, IDS, reference_program=program, compare_float=False)
    assert not report.bit_exact
    d = report.divergence
    shape = program.stage(CORRUPT_STAGE).shape
    assert (d.stage, d.kind, d.step, d.sample, d.sample_id) == (CORRUPT_STAGE, "neuron", step, sample, IDS[sample])
    assert d.flat_index == flat and d.index == tuple(np.unravel_index(flat, shape))
    assert d.lava == 0 and d.reference == value > 0
    by_name = {s.name: s.mismatches for s in report.stages}
    assert by_name["relu"] == 0 and by_name[CORRUPT_STAGE] > 0          # stages before it agree
    assert f"stage {CORRUPT_STAGE!r}" in d.describe() and "MISMATCH" in report.format()
