"""Merge the shard files of one ``benchmarks/accuracy.py --shard K/N`` run into the result of the whole run.

    python benchmarks/merge_shards.py --out benchmarks/results/resnet20_full_T128_fixed \
        /tmp/r20_s1.json /tmp/r20_s2.json ...

Every shard must come from the same command apart from ``--shard`` and ``--out`` (same model and model hash,
calibration data hash, steps, methods and precisions, N), and the shards K = 1..N must all be present exactly
once. Accuracy after each step is the summed correct count over all samples (exact, no averaging of averages);
wall times add up. Writes ``<out>.json`` in the schema of an unsharded run (plus ``merged_from``) and its plot.
``--interim`` pools the shards finished so far and only prints their table rows (labelled as interim).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import _plot, reach_fields, write_json  # noqa: E402
from table import rows as table_rows  # noqa: E402


class MergeError(ValueError):
    """Shard files that do not form one complete run (names the file and the field)."""


_SAME = ("model", "steps", "model_hash", "preset", "input_frac_bits")


def _row_key(row: dict) -> tuple:
    return row["method"], row["precision"], row.get("synapse_dtype")


def merge(manifests: list[dict], names: list[str], *, complete: bool = True) -> dict:
    """The whole run from its shards; ``complete=False`` pools the shards given (each K at most once) into an
    interim result whose ``subset`` names them — never the full-set figure."""
    if not manifests:
        raise MergeError("no shard files given")
    first = manifests[0]
    for m, name in zip(manifests, names):
        if not m.get("shard"):
            raise MergeError(f"{name}: not a shard file (field 'shard' missing)")
        for key in _SAME:
            if m.get(key) != first.get(key):
                raise MergeError(f"{name}: field {key!r} = {m.get(key)!r} differs from {names[0]} ({first.get(key)!r})")
        if m["calibration"] != first["calibration"]:
            raise MergeError(f"{name}: field 'calibration' differs from {names[0]}")
        if [_row_key(r) for r in m["results"]] != [_row_key(r) for r in first["results"]]:
            raise MergeError(f"{name}: field 'results' holds other methods/precisions/synapse dtypes than "
                             f"{names[0]}")
        if (m["shard"]["n"], m["shard"]["of_samples"]) != (first["shard"]["n"], first["shard"]["of_samples"]):
            raise MergeError(f"{name}: field 'shard' belongs to another split than {names[0]}")
    n_sh = first["shard"]["n"]
    ks = sorted(m["shard"]["k"] for m in manifests)
    if ks != list(range(1, n_sh + 1)) and (complete or len(set(ks)) != len(ks)):
        raise MergeError(f"shards present {ks}, need each of 1..{n_sh} exactly once")
    total = sum(m["samples"] for m in manifests)
    if complete and total != first["shard"]["of_samples"]:
        raise MergeError(f"shards hold {total} samples, the split has {first['shard']['of_samples']}")
    ann = sum(m["ann_correct"] for m in manifests) / total
    results = []
    for i, row in enumerate(first["results"]):
        rows = [m["results"][i] for m in manifests]
        correct = [sum(r["correct"][t] for r in rows) for t in range(first["steps"])]
        curve = [c / total for c in correct]
        wall = sum(r["wall_s"] for r in rows)
        results.append({
            "method": row["method"], "precision": row["precision"], "wall_s": round(wall, 1),
            "ms_per_sample_step": round(1000 * wall / (total * first["steps"]), 3),
            "accuracy": {k: round(curve[int(k) - 1], 4) for k in row["accuracy"]},
            **reach_fields(curve, ann),
            "curve": [round(c, 5) for c in curve], "correct": correct,
            "input_clipped": sum(r["input_clipped"] for r in rows),
            "bias_correction": row.get("bias_correction"), "synapse_dtype": row.get("synapse_dtype"),
            "saturated": {k: sum(r["saturated"].get(k, 0) for r in rows) for k in row["saturated"]},
        })
    out = {k: v for k, v in first.items() if k not in ("results", "shard", "command")}
    subset = first["shard"]["of_subset"] if complete else (
        f"interim: shards {ks} of {n_sh}, {total} of {first['shard']['of_samples']} images")
    out.update({"samples": total, "subset": subset, "shard": None, "ann_accuracy": ann,
                "ann_correct": sum(m["ann_correct"] for m in manifests), "results": results,
                "command": first["command"], "merged_from": names})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shards", nargs="+", help="shard JSON files")
    ap.add_argument("--out", help="output path without extension (required unless --interim)")
    ap.add_argument("--interim", action="store_true",
                    help="pool an incomplete set of shards and print its accuracy table rows; writes no file")
    args = ap.parse_args(argv)
    if not args.interim and not args.out:
        ap.error("--out is required (or --interim)")
    try:
        manifests = [json.loads(Path(p).read_text()) for p in args.shards]
        merged = merge(manifests, [str(p) for p in args.shards], complete=not args.interim)
    except (OSError, json.JSONDecodeError, MergeError, KeyError) as exc:
        print(f"merge_shards: error: {exc}", file=sys.stderr)
        return 2
    if args.interim:
        print("\n".join(table_rows(merged)))
        return 0
    out = Path(args.out)
    write_json(merged, out.with_suffix(".json"))
    _plot(merged, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
