"""Print the markdown accuracy table of docs/RESULTS.md §3 from benchmarks/results/*.json.

    python benchmarks/table.py benchmarks/results/resnet20_n250_T128_fixed.json benchmarks/results/resnet20_n250_T64_float.json
"""
from __future__ import annotations

import json
import sys


COLUMNS = (8, 16, 32, 64, 128, 256)


def precision_label(manifest: dict, row: dict) -> str:
    """A row's precision and what differs from the default run: "float (F_in = 12, float32 synapses)"."""
    notes = ([f"F_in = {manifest['input_frac_bits']}"] if manifest.get("input_frac_bits") else []) + \
        (["float32 synapses"] if row.get("synapse_dtype") == "float32" else [])
    return row["precision"] + (f" ({', '.join(notes)})" if notes else "")


def rows(source: str | dict) -> list[str]:
    """Table rows of one result file (path) or of an already loaded result."""
    m = source if isinstance(source, dict) else json.load(open(source))
    out = []
    for r in m["results"]:
        curve = r["curve"]  # accuracy after every step 1..T
        cells = [f"{100 * curve[k - 1]:.2f}" if len(curve) >= k else "–" for k in COLUMNS]
        reach = [r["steps_to_ann_minus_1pct"], r["steps_to_ann_minus_0.1pct"], r["steps_to_ann"]]
        reach = ["–" if v is None else str(v) for v in reach]
        precision = precision_label(m, r)
        out.append(f"| {m['model']} | {m['samples']} ({m['subset']}) | {r['method']} | {precision} | "
                   f"{100 * m['ann_accuracy']:.2f} | " + " | ".join(cells) + f" | {' / '.join(reach)} | "
                   f"{r['ms_per_sample_step']} |")
    return out


def main(paths: list[str]) -> None:
    print("| model | test images | method | precision | ANN % | " + " | ".join(f"T={k}" for k in COLUMNS) +
          " | steps to ANN−1 % / −0.1 % / ANN | ms per sample-step |")
    print("|---|---|---|---|---|" + "---|" * len(COLUMNS) + "---|---|")
    for p in paths:
        print("\n".join(rows(p)))


if __name__ == "__main__":
    main(sys.argv[1:])
