"""Print the markdown accuracy table of docs/RESULTS.md §3 from benchmarks/results/*.json.

    python benchmarks/table.py benchmarks/results/resnet20_n250_T128_fixed.json benchmarks/results/resnet20_n250_T64_float.json
"""
from __future__ import annotations

import json
import sys


def rows(path: str) -> list[str]:
    m = json.load(open(path))
    out = []
    for r in m["results"]:
        acc = r["accuracy"]
        cells = [f"{100 * acc[k]:.1f}" if k in acc else "–" for k in ("16", "32", "64", "128")]
        reach = [r["steps_to_ann_minus_1pct"], r["steps_to_ann_minus_0.1pct"], r["steps_to_ann"]]
        reach = ["–" if v is None else str(v) for v in reach]
        out.append(f"| {m['model']} | {m['samples']} ({m['subset']}) | {r['method']} | {r['precision']} | "
                   f"{100 * m['ann_accuracy']:.1f} | " + " | ".join(cells) + f" | {' / '.join(reach)} | "
                   f"{r['ms_per_sample_step']} |")
    return out


def main(paths: list[str]) -> None:
    print("| model | test images | method | precision | ANN % | T=16 | T=32 | T=64 | T=128 | "
          "steps to ANN−1 % / −0.1 % / ANN | ms per sample-step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in paths:
        print("\n".join(rows(p)))


if __name__ == "__main__":
    main(sys.argv[1:])
