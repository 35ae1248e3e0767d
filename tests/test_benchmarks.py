"""benchmarks/accuracy.py sharding and benchmarks/merge_shards.py.

Independent expectation: the shards of a run, merged, give exactly the curve and ANN accuracy of the same run
unsharded (summed correct counts); incomplete or inconsistent shard sets are refused with the file and field.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import accuracy  # noqa: E402
import merge_shards  # noqa: E402

ARGS = ["--model", "mnist", "--samples", "30", "--steps", "4", "--methods", "const,msat-norm+h", "--precision",
        "fixed", "--calib", "32", "--threads", "1", "--batch-size", "16"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    assert accuracy.main(ARGS + ["--out", str(root / "whole")]) == 0
    for k in (1, 2, 3):
        assert accuracy.main(ARGS + ["--shard", f"{k}/3", "--out", str(root / f"s{k}")]) == 0
    return root


def test_merged_shards_equal_the_whole_run(runs):
    whole = json.loads((runs / "whole.json").read_text())
    shards = [json.loads((runs / f"s{k}.json").read_text()) for k in (3, 1, 2)]
    assert [s["samples"] for s in shards] == [10, 10, 10] and shards[0]["subset"] == "shard 3/3 of strided"
    assert merge_shards.main([str(runs / f"s{k}.json") for k in (3, 1, 2)] + ["--out", str(runs / "merged")]) == 0
    merged = json.loads((runs / "merged.json").read_text())
    assert merged["samples"] == whole["samples"] == 30 and merged["subset"] == "strided"
    assert merged["ann_accuracy"] == pytest.approx(whole["ann_accuracy"])
    for a, b in zip(merged["results"], whole["results"]):
        assert (a["method"], a["precision"]) == (b["method"], b["precision"])
        assert a["correct"] == b["correct"] and a["curve"] == b["curve"]
        assert a["steps_to_ann"] == b["steps_to_ann"]
    assert (runs / "merged.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (runs / "whole.png").exists() and not (runs / "s1.png").exists()  # shards are not plotted


def test_incomplete_or_mixed_shards_are_refused(runs, capsys):
    s = [json.loads((runs / f"s{k}.json").read_text()) for k in (1, 2, 3)]
    names = ["s1", "s2", "s3"]
    with pytest.raises(merge_shards.MergeError, match="1..3"):
        merge_shards.merge(s[:2], names[:2])
    with pytest.raises(merge_shards.MergeError, match="1..3"):
        merge_shards.merge([s[0], s[0], s[2]], names)
    other = dict(s[1], model_hash="0" * 64)
    with pytest.raises(merge_shards.MergeError, match="s2.*model_hash"):
        merge_shards.merge([s[0], other, s[2]], names)
    f32 = dict(s[1], results=[dict(r, synapse_dtype="float32") for r in s[1]["results"]])
    with pytest.raises(merge_shards.MergeError, match="s2.*synapse dtypes"):
        merge_shards.merge([s[0], f32, s[2]], names)
    whole = json.loads((runs / "whole.json").read_text())
    with pytest.raises(merge_shards.MergeError, match="not a shard"):
        merge_shards.merge([whole], ["whole"])
    assert merge_shards.main([str(runs / "s1.json"), "--out", str(runs / "bad")]) == 2
    assert "merge_shards: error:" in capsys.readouterr().err and not (runs / "bad.json").exists()


def test_interim_pools_the_shards_given(runs, capsys):
    """--interim: correct counts summed over the shards present (each K once), labelled interim, no file."""
    s = [json.loads((runs / f"s{k}.json").read_text()) for k in (1, 3)]
    part = merge_shards.merge(s, ["s1", "s3"], complete=False)
    assert part["samples"] == 20 and part["subset"].startswith("interim: shards [1, 3] of 3")
    assert part["ann_correct"] == s[0]["ann_correct"] + s[1]["ann_correct"]
    for i, row in enumerate(part["results"]):
        assert row["correct"] == [a + b for a, b in zip(s[0]["results"][i]["correct"], s[1]["results"][i]["correct"])]
        assert row["curve"][-1] == pytest.approx(row["correct"][-1] / 20)
    with pytest.raises(merge_shards.MergeError, match="exactly once"):
        merge_shards.merge([s[0], s[0]], ["s1", "s1"], complete=False)
    assert merge_shards.main([str(runs / "s1.json"), str(runs / "s3.json"), "--interim"]) == 0
    out = capsys.readouterr().out
    assert "interim: shards [1, 3] of 3" in out and out.count("\n") == len(s[0]["results"])
    with pytest.raises(SystemExit):
        merge_shards.main([str(runs / "s1.json")])  # neither --out nor --interim


def test_bad_shard_argument(capsys):
    for bad in ("0/3", "4/3", "x"):
        with pytest.raises(SystemExit):
            accuracy.main(ARGS + ["--shard", bad, "--out", "/nonexistent/x"])


def test_table_rows_name_what_differs_from_the_default_run():
    import table

    curve = [0.1] * 7 + [0.625]  # 8 steps: only the T=8 column has a value
    row = dict(method="const", precision="float", curve=curve, steps_to_ann_minus_1pct=None,
               **{"steps_to_ann_minus_0.1pct": None}, steps_to_ann=8, ms_per_sample_step=1.5)
    m = dict(model="resnet20", samples=10, subset="strided", ann_accuracy=0.5, input_frac_bits=12,
             results=[dict(row, synapse_dtype="float32"), dict(row, precision="fixed", synapse_dtype=None)])
    f32, fixed = table.rows(m)
    assert f32 == ("| resnet20 | 10 (strided) | const | float (F_in = 12, float32 synapses) | 50.00 | 62.50 | – | – "
                   "| – | – | – | – / – / 8 | 1.5 |")
    assert "| const | fixed (F_in = 12) | 50.00 |" in fixed
    (plain,) = table.rows(dict(m, input_frac_bits=None, results=[row]))
    assert "| const | float | 50.00 | 62.50 |" in plain


def test_burst_scaled_method_divides_lambda(tmp_path):
    """accuracy.py's +bsN network (written by --save-nets) is the const network with every spiking layer's λ
    divided by N and Γ = N; the input scale is not divided (the same rule as msat-lava eval, test_eval)."""
    from netx_export.api import load

    nets = tmp_path / "nets"
    args = ARGS[:ARGS.index("--methods") + 1] + ["const,const+h+bs4"] + ARGS[ARGS.index("--methods") + 2:]
    assert accuracy.main(args + ["--save-nets", str(nets), "--out", str(tmp_path / "r")]) == 0
    plain, burst = load(nets / "const.net"), load(nets / "const+h+bs4.net")
    assert burst.input_scale == plain.input_scale
    assert set(burst.neurons) == set(plain.neurons)
    for name, spec in burst.neurons.items():
        assert spec.lam == pytest.approx(plain.neurons[name].lam / 4, rel=1e-12)
        assert (spec.gamma, spec.v_init, plain.neurons[name].gamma) == (4, 0.5, 1)


def test_table_coverage_reports_full_rows_and_prices_the_missing(tmp_path):
    """benchmarks/table_coverage.py: a full-set row is reported with its file and longest T; shard files are
    ignored; a missing cell is priced N·T·c with c = the reference model's core-ms per sample-step (ms per
    sample-step × processes × threads; × 55/19 for ResNet56), and the full-set row wins over a subset one."""
    import table_coverage as tc

    def manifest(name, model, subset, samples, rows, world=1, threads=1, shard=None):
        m = {"model": model, "subset": subset, "samples": samples, "shard": shard, "torch_threads": threads,
             "distributed": {"world_size": world} if world > 1 else None,
             "results": [{"method": meth, "precision": prec, "curve": [0.5] * steps, "ms_per_sample_step": ms}
                         for meth, prec, steps, ms in rows]}
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(m))
        return p

    files = [manifest("full", "resnet20", "full", 10000, [("p99.9", "fixed", 64, 2.0)], world=2),
             manifest("sub", "resnet20", "strided", 250, [("p99.9", "fixed", 128, 30.0), ("dtt", "fixed", 64, 9.0)]),
             manifest("shard", "resnet56", "shard 1/2 of full", 5000, [("p99.9", "fixed", 64, 1.0)],
                      shard={"k": 1, "n": 2})]
    rows = {(r["model"], r["method"], r["precision"]): r for r in tc.coverage(tc.collect(files), 64)}
    full = rows[("resnet20", "p99.9", "fixed")]
    assert full["status"] == "full set" and full["file"].endswith("full.json") and full["steps"] == 64
    r56 = rows[("resnet56", "p99.9", "fixed")]  # the shard file does not count
    assert r56["status"] == "missing"
    assert r56["core_ms_per_sample_step"] == pytest.approx(2.0 * 2 * 55 / 19, rel=1e-3)
    assert r56["cost_core_hours"] == pytest.approx(10000 * 64 * 2.0 * 2 * 55 / 19 / 3.6e6, rel=1e-2)
    dtt = rows[("resnet20", "dtt", "float")]  # priced from the other precision's subset run
    assert dtt["core_ms_per_sample_step"] == pytest.approx(9.0) and "250-image" in dtt["cost_basis"]
    assert "| resnet20 | p99.9 | fixed | yes (T = 64) |" in tc.markdown(list(rows.values()))
