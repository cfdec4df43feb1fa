"""Kill soak: SIGKILL the live and paper trading loops many times; count kills, duplicates, mismatches.

The live loop trades against the loopback emulator and is killed at the order protocol's named
points (recorded-not-sent, answered-not-recorded, recorded) and after random delays; the paper loop
is killed after random delays. After the runs the ledger must equal the emulator (orders, trades,
balances) and the paper book an uninterrupted run. Figures are counts (correctness, not speed), so
there is no timing reference.

    .venv/bin/python benchmarks/kill.py --runs 200 --paper-runs 50
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from chartrl.testing.killrun import run_live_kills, run_paper_kills


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100, help="killed runs of the live loop")
    p.add_argument("--paper-runs", type=int, default=30, help="killed runs of the paper loop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--faults",
        action="store_true",
        help="also inject dropped responses, 503s, resets on orders",
    )
    p.add_argument(
        "--partial-fills", type=int, default=2, help="fills per market order on the emulator"
    )
    args = p.parse_args()
    from rich.progress import Progress

    with tempfile.TemporaryDirectory(prefix="chartrl-kill-") as tmp, Progress() as bar:
        t_live = bar.add_task("live kill runs", total=args.runs)
        live = run_live_kills(
            args.runs,
            Path(tmp) / "live",
            seed=args.seed,
            partial_fills=args.partial_fills,
            on_run=lambda: bar.advance(t_live),
            faults=args.faults,
        )
        t_paper = bar.add_task("paper kill runs", total=args.paper_runs)
        paper = run_paper_kills(
            args.paper_runs,
            Path(tmp) / "paper",
            seed=args.seed,
            on_run=lambda: bar.advance(t_paper),
        )
    for name, rep in (("live", live), ("paper", paper)):
        print(
            f"{name}: runs={rep.runs} kills={rep.kills} kills_mid_work={rep.progressed} by_point={rep.kills_by_point} orders={rep.orders} "
            f"duplicates={rep.duplicates} mismatches={len(rep.mismatches)} seconds={rep.seconds:.1f}"
        )
        for m in rep.mismatches[:10]:
            print(f"  mismatch: {m}")
    print(
        f"RESULT live_runs={live.runs} live_kills={live.kills} live_kills_mid_work={live.progressed} live_orders={live.orders} live_duplicates={live.duplicates} "
        f"live_mismatches={len(live.mismatches)} paper_runs={paper.runs} paper_kills={paper.kills} "
        f"paper_kills_mid_work={paper.progressed} "
        f"paper_duplicates={paper.duplicates} paper_mismatches={len(paper.mismatches)} ok={live.ok and paper.ok}"
    )


if __name__ == "__main__":
    main()
