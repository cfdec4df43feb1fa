"""Kill harness: run a trading loop in a child process, SIGKILL it at chosen points, restart, verify.

The live loop trades against an :class:`~chartrl.testing.exchange_sim.ExchangeSim` in the parent
(flat -> buy, long -> sell, so any doubled order shows as two same-side orders in a row). A run is
killed either at a named point of the order protocol (``order_recorded``: recorded, not sent;
``order_sent``: the exchange answered, nothing recorded yet; ``order_applied``) or after a random
delay. After every run the next one starts by reconciling. At the end the ledger must equal the
emulator: the same orders (client id, exchange id, filled amount, state), the same trades, and
balances equal to the baseline plus the recorded fills.

The paper loop replays seeded synthetic candles through :class:`PaperAccount`; after random kills
and restarts its book and fills must equal an uninterrupted :class:`SimAccount` run.

Children are forked from a ``forkserver`` that imported chartrl once, so a restart costs
milliseconds instead of the torch import. Used by ``tests/test_kill.py`` and ``benchmarks/kill.py``.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from chartrl.account.base import Candle, SimAccount
from chartrl.account.fills import MarketRules
from chartrl.account.ledger import Ledger
from chartrl.account.live import BASELINE_FILL_ROWID, LiveAccount
from chartrl.account.live_books import expected_balances
from chartrl.account.paper import PaperAccount
from chartrl.actions import Action
from chartrl.config.settings import ExchangeSettings, Settings, TradingSettings
from chartrl.errors import TemporaryError
from chartrl.testing.exchange_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET, ExchangeSim
from chartrl.testing.synthetic import synthetic_candles

LIVE_POINTS = ("order_recorded", "order_sent", "order_applied")
PAPER_RULES = MarketRules(fee=0.001, slippage_bps=5.0, amount_step=1e-5, min_notional=5.0)
GRACE_SECONDS = 0.3  # the emulator runs in-process: a request is processed or gone well within this


@dataclass
class KillReport:
    runs: int = 0
    kills: int = 0
    kills_by_point: dict[str, int] = field(default_factory=dict)
    progressed: int = 0
    """Killed runs after which the state had moved on (the kill landed mid-work, not before it)."""
    orders: int = 0
    duplicates: int = 0
    mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.duplicates == 0 and not self.mismatches


FORKSERVER_PRELOAD = [
    "chartrl.testing.killrun",
    "chartrl.daemon.simrun",
    "chartrl.daemon.tick",
    "chartrl.train.checkpoint",
    "ccxt",
    "torch",
]
"""What the one forkserver of a process imports before forking children. The kill runs and the
soak share it (whichever starts it first sets its preload), so both lists are one: a soak child
forked from a server without torch would import it itself, and its resident set would still be
climbing when the soak starts checking that it stays flat."""


def forkserver_context() -> Any:
    """The multiprocessing context of kill runs and soak children (see FORKSERVER_PRELOAD)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
    return ctx


def _quiet_logs(log_file: str) -> None:
    from chartrl.logs import configure_logging

    configure_logging("info", "json", stream=open(log_file, "a", buffering=1))  # noqa: SIM115 - lives with the child


# -- live -------------------------------------------------------------------------------------------
def live_worker(
    url: str,
    ledger_file: str,
    target_orders: int,
    pause_at: str | None,
    occurrence: int,
    price: float,
    log_file: str,
    conn: Any,
) -> None:
    """Trade until ``target_orders`` orders are filled; pause forever at the n-th ``pause_at`` point."""
    _quiet_logs(log_file)
    settings = Settings(
        exchange=ExchangeSettings(
            api_url=url, api_key=DEFAULT_API_KEY, api_secret=DEFAULT_API_SECRET, timeout_ms=5000
        ),
        trading=TradingSettings(
            mode="live", order_lookup_grace_seconds=GRACE_SECONDS, order_lost_deadline_seconds=0
        ),
    )
    seen = {"n": 0}

    def on_point(name: str) -> None:
        if name == pause_at:
            seen["n"] += 1
            if seen["n"] == occurrence:
                conn.send(("paused", name))
                time.sleep(3600)

    ledger = Ledger(ledger_file)
    acc = LiveAccount(settings, ledger, live=True, on_point=on_point)
    while True:
        try:
            acc.start()
            break
        except TemporaryError:
            time.sleep(0.05)
    candle = Candle(0, price, price, price, price, 0.0)
    while len(ledger.orders("live", states=["filled"])) < target_orders:
        long = acc.position * price >= 5.0
        try:
            acc.execute(Action.SELL if long else Action.BUY, candle)
        except TemporaryError:
            time.sleep(0.05)
    conn.send(("done", None))


def _run_child(
    ctx: Any,
    target: Any,
    args: tuple,
    kill_at: str | None,
    delay: float | None,
    timeout: float = 60.0,
    delay_from_ready: bool = False,
) -> bool:
    """Start a child, kill it when it pauses (or after ``delay``); True if it was killed.

    ``delay_from_ready``: the delay counts from the child's "ready" message, not from its start, so
    the kill lands in the work rather than in the set-up.
    """
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=target, args=(*args, child), daemon=True)
    p.start()
    child.close()
    killed = False
    waiting = delay is None or delay_from_ready
    deadline = time.monotonic() + (timeout if waiting else delay)
    while p.is_alive():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if waiting:
                p.kill()
                p.join()
                raise RuntimeError(
                    f"kill run: child did not reach {kill_at!r} within {timeout:.0f}s"
                )
            p.kill()
            killed = True
            break
        if parent.poll(min(remaining, 0.05)):
            try:
                kind, _ = parent.recv()
            except EOFError:
                continue
            if kind == "ready" and delay is not None and delay_from_ready:
                waiting, deadline = False, time.monotonic() + delay
                continue
            if kind == "paused":
                p.kill()
                killed = True
                break
            if kind == "done":
                break
    p.join()
    parent.close()
    if not killed and p.exitcode != 0:
        raise RuntimeError(f"kill run: child failed with exit code {p.exitcode} (see its log file)")
    return killed


def verify_live(ledger: Ledger, sim: ExchangeSim) -> tuple[int, list[str]]:
    """(duplicates, mismatches) between the ledger and the emulator."""
    problems: list[str] = []
    remote = sim.orders()
    cids = [o["clientOrderId"] for o in remote]
    duplicates = len(cids) - len(set(cids))
    sides = [o["side"] for o in remote]
    duplicates += sum(
        1 for a, b in zip(sides, sides[1:], strict=False) if a == b
    )  # the loop alternates buy/sell
    local = {o.client_order_id: o for o in ledger.orders("live")}
    for o in remote:
        mine = local.get(o["clientOrderId"])
        if mine is None:
            problems.append(f"exchange order {o['clientOrderId']} missing from the ledger")
            continue
        if mine.exchange_order_id != str(o["orderId"]) or Decimal(str(mine.filled)) != Decimal(
            o["executedQty"]
        ):
            problems.append(
                f"order {mine.client_order_id}: ledger {mine.exchange_order_id}/{mine.filled} vs {o['orderId']}/{o['executedQty']}"
            )
        if (mine.state, o["status"]) not in (
            ("filled", "FILLED"),
            ("partially_filled", "PARTIALLY_FILLED"),
            ("open", "NEW"),
        ):
            problems.append(
                f"order {mine.client_order_id}: ledger {mine.state}, exchange {o['status']}"
            )
    newest = next(reversed(local), None)  # ledger.orders is in creation order
    for cid, mine in local.items():
        if cid in set(cids) or mine.state == "rejected":
            continue
        # A lost request still being looked up when the run stopped (it becomes rejected after
        # trading.order_lost_deadline_seconds) is consistent only if nothing was sent after it.
        if mine.state == "unknown" and cid == newest:
            continue
        problems.append(f"ledger order {cid} ({mine.state}) is not on the exchange")
    trades = {str(t["id"]): t for t in sim.trades()}
    fills = {f.trade_id: f for f in ledger.fills("live")}
    if set(trades) != set(fills):
        problems.append(
            f"trades differ: exchange-only {sorted(set(trades) - set(fills))}, ledger-only {sorted(set(fills) - set(trades))}"
        )
    for tid in set(trades) & set(fills):
        if Decimal(str(fills[tid].amount)) != Decimal(trades[tid]["qty"]) or Decimal(
            str(fills[tid].fee)
        ) != Decimal(trades[tid]["commission"]):
            problems.append(f"trade {tid} differs")
    baseline = ledger.latest_balances("live", "baseline")
    if baseline is None:
        problems.append("no balance baseline in the ledger")
    else:
        rowid = int(ledger.get_flag(BASELINE_FILL_ROWID) or 0)
        expected = expected_balances(
            baseline[1], ledger.fills_after_rowid("live", "BTC/USDT", rowid), "BTC", "USDT"
        )
        actual = sim.balances()
        for c in ("BTC", "USDT"):
            if abs(expected[c] - actual.get(c, 0.0)) > 1e-8:
                problems.append(f"{c}: ledger {expected[c]:.8f}, exchange {actual.get(c, 0.0):.8f}")
    return duplicates, problems


def run_live_kills(
    runs: int,
    workdir: Path,
    seed: int = 0,
    partial_fills: int = 2,
    max_delay: float = 0.6,
    on_run: Callable[[], None] | None = None,
    faults: bool = False,
) -> KillReport:
    """``runs`` killed runs of the live loop, one clean final run, then the ledger-vs-exchange check.

    ``faults`` also makes the emulator drop order responses after placing them, answer 503 after
    processing, reset before processing, and fail look-ups now and then (ambiguity on top of kills).
    """
    ctx, rng, rep = forkserver_context(), random.Random(seed), KillReport()
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    ledger_file, log_file = str(workdir / "ledger.sqlite"), str(workdir / "worker.log")
    candles = synthetic_candles(60, seed=seed + 1)
    price = float(candles["open"].iloc[-1])
    with ExchangeSim(candles, partial_fills=partial_fills) as sim:
        if faults:
            sim.faults.add(
                "/api/v3/order", "drop_response", count=None, probability=0.15, method="POST"
            )
            sim.faults.add(
                "/api/v3/order", "503", count=None, probability=0.1, method="POST", process=True
            )
            sim.faults.add("/api/v3/order", "reset", count=None, probability=0.1, method="POST")
            sim.faults.add("/api/v3/order", "500", count=None, probability=0.1, method="GET")
        points = [*LIVE_POINTS, "random"]
        for i in range(runs):
            point = points[i % len(points)]
            # Enough work left that the kill lands before the run finishes on its own.
            target = len(sim.orders()) + 3
            args = (
                sim.url,
                ledger_file,
                target,
                None if point == "random" else point,
                rng.randint(1, 2),
                price,
                log_file,
            )
            before = len(sim.trades())
            killed = _run_child(
                ctx,
                live_worker,
                args,
                point,
                rng.uniform(0.0, max_delay) if point == "random" else None,
            )
            rep.runs += 1
            if killed:
                rep.kills += 1
                rep.progressed += len(sim.trades()) > before
                rep.kills_by_point[point] = rep.kills_by_point.get(point, 0) + 1
            if on_run is not None:
                on_run()
        sim.faults.clear()
        final_target = len(sim.orders()) + 2
        _run_child(
            ctx,
            live_worker,
            (sim.url, ledger_file, final_target, None, 0, price, log_file),
            None,
            None,
        )
        with Ledger(ledger_file) as ledger:
            rep.duplicates, rep.mismatches = verify_live(ledger, sim)
        rep.orders = len(sim.orders())
    rep.seconds = time.monotonic() - t0
    return rep


# -- paper ------------------------------------------------------------------------------------------
def paper_candles(n: int, seed: int) -> list[Candle]:
    frame = synthetic_candles(n, seed=seed)
    return [
        Candle(int(ts.value // 1_000_000), o, h, lo, c, v)
        for ts, o, h, lo, c, v in frame.itertuples(index=False)
    ]


def paper_action(i: int, seed: int) -> int:
    return random.Random(seed * 1_000_003 + i).choice(
        [Action.HOLD, Action.HOLD, Action.BUY, Action.SELL]
    )


def paper_worker(ledger_file: str, n: int, seed: int, log_file: str, conn: Any) -> None:
    _quiet_logs(log_file)
    candles = paper_candles(n, seed)
    with Ledger(ledger_file) as ledger:
        acc = PaperAccount(ledger, symbol="BTC/USDT", initial_cash=10_000.0, rules=PAPER_RULES)
        conn.send(("ready", None))
        for i, c in enumerate(candles):
            if acc.last_candle_ms is None or c.timestamp > acc.last_candle_ms:
                acc.execute(paper_action(i, seed), c)
    conn.send(("done", None))


def _paper_progress(ledger_file: str) -> int:
    if not Path(ledger_file).is_file():
        return -1
    with Ledger(ledger_file) as ledger:
        book = ledger.load_paper_book("BTC/USDT")
    return -1 if book is None or book["last_candle_ms"] is None else int(book["last_candle_ms"])


def run_paper_kills(
    runs: int,
    workdir: Path,
    seed: int = 0,
    n: int | None = None,
    max_delay: float = 0.3,
    on_run: Callable[[], None] | None = None,
) -> KillReport:
    """Random-delay kills of the paper loop, a final clean run, then book and fills vs an uninterrupted run.

    ``n`` candles (default: enough that every run still has candles left when it is killed; the
    loop books a few thousand candles a second, and each run is killed within ``max_delay`` of
    its start).
    """
    n = n if n is not None else 2000 + int(20_000 * max_delay) * runs
    ctx, rng, rep = forkserver_context(), random.Random(seed), KillReport()
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    ledger_file, log_file = str(workdir / "paper.sqlite"), str(workdir / "paper.log")
    for _ in range(runs):
        rep.runs += 1
        before = _paper_progress(ledger_file)
        if _run_child(
            ctx,
            paper_worker,
            (ledger_file, n, seed, log_file),
            "random",
            rng.uniform(0.0, max_delay),
            delay_from_ready=True,
        ):
            rep.kills += 1
            rep.progressed += _paper_progress(ledger_file) > before
            rep.kills_by_point["random"] = rep.kills_by_point.get("random", 0) + 1
        if on_run is not None:
            on_run()
    _run_child(ctx, paper_worker, (ledger_file, n, seed, log_file), None, None)
    reference = SimAccount(10_000.0, PAPER_RULES)
    for i, c in enumerate(paper_candles(n, seed)):
        reference.execute(paper_action(i, seed), c)
    with Ledger(ledger_file) as ledger:
        acc = PaperAccount(ledger, symbol="BTC/USDT", initial_cash=1.0, rules=PAPER_RULES)
        if acc.book != reference.book:
            rep.mismatches.append(
                f"paper book {acc.book.cash}/{acc.book.position} != reference {reference.book.cash}/{reference.book.position}"
            )
        orders = ledger.orders("paper")
        rep.orders = len(orders)
        rep.duplicates = len(orders) - len(reference.book.fills)
    rep.seconds = time.monotonic() - t0
    return rep


def main(
    argv: list[str] | None = None,
) -> None:  # python -m chartrl.testing.killrun [live|paper] RUNS DIR
    args = (argv if argv is not None else sys.argv[1:]) or ["live", "10", "/tmp/chartrl-kill"]
    kind, runs, workdir = args[0], int(args[1]), Path(args[2])
    rep = (run_live_kills if kind == "live" else run_paper_kills)(runs, workdir)
    print(rep)


if __name__ == "__main__":
    main()
