"""One rank of a multi-process scenario for tests/test_distributed.py (run with RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT set, as torchrun sets them): ``python tests/_dist_worker.py SCENARIO``.

Prints ``rank R: <exception type>: <message>`` on stderr and exits 1 when its session fails, 0 otherwise; rank
0 prints what it gathered on stdout.
"""
from __future__ import annotations

import os
import sys

from msat_lava import distributed


def square(c: int) -> int:
    return c * c


def main(scenario: str) -> int:
    with distributed.session() as ctx:
        if scenario == "dies" and ctx.rank == 1:
            os._exit(7)  # leaves without a word: the others must not wait for it

        def work(c: int) -> int:
            if scenario == "chunk_fails" and c == 5:
                raise ValueError(f"boom at chunk {c}")
            return square(c)

        parts = ctx.map_chunks(7, work)
        ranks = ctx.gather(ctx.rank)
        ctx.check_same({"steps": 8, "array": list(range(5))}, "the settings")
        if ctx.is_main:
            print(f"chunks {parts} ranks {ranks}", flush=True)
        else:
            assert parts is None and ranks is None
        if scenario == "late" and ctx.is_main:
            raise RuntimeError("disk full while writing")  # after the last exchange, like a failed write
        if scenario == "differ":
            ctx.check_same(ctx.rank, "the rank numbers")
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1])
    except Exception as exc:
        print(f"rank {os.environ.get('RANK')}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = 1
    sys.exit(code)
