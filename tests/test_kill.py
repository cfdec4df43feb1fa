"""Kill tests: SIGKILL the live and paper trading loops at named and random points, restart, compare.

Each run is a real child process (forked from a preloaded forkserver) killed with SIGKILL. After
the restarts, the ledger must equal the emulator exactly and no order may be doubled; the paper
book must equal an uninterrupted run. ``benchmarks/kill.py --runs N`` runs the long version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chartrl.testing.killrun import LIVE_POINTS, run_live_kills, run_paper_kills

pytestmark = pytest.mark.timeout(240)


def test_live_loop_survives_kills_without_doubling(tmp_path: Path) -> None:
    rep = run_live_kills(8, tmp_path / "live", seed=7, faults=True)  # ambiguity on top of kills
    assert rep.mismatches == []
    assert rep.duplicates == 0
    assert rep.kills >= 6 and rep.progressed >= 4, rep
    assert all(rep.kills_by_point.get(p, 0) >= 1 for p in LIVE_POINTS), rep.kills_by_point
    assert rep.orders >= rep.kills  # the loop kept making progress between kills


def test_paper_loop_survives_kills_with_same_state(tmp_path: Path) -> None:
    rep = run_paper_kills(5, tmp_path / "paper", seed=3)
    assert rep.mismatches == [] and rep.duplicates == 0
    assert rep.kills >= 3 and rep.progressed >= 2, (
        rep
    )  # kills landed mid-replay, not only before it
    assert rep.orders > 20


def test_verifier_catches_a_doubled_order(tmp_path: Path) -> None:
    """The check itself can fail: an order sent twice (a blind re-send) is reported."""
    import time

    from chartrl.account.base import Candle
    from chartrl.account.ledger import Ledger
    from chartrl.account.live import LiveAccount
    from chartrl.config.settings import ExchangeSettings, Settings, TradingSettings
    from chartrl.strategies.base import Action
    from chartrl.testing.exchange_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET, ExchangeSim
    from chartrl.testing.killrun import verify_live
    from chartrl.testing.synthetic import synthetic_candles

    candles = synthetic_candles(60, seed=1)
    price = float(candles["open"].iloc[-1])
    with ExchangeSim(candles) as sim, Ledger(tmp_path / "l.sqlite") as ledger:
        s = Settings(
            exchange=ExchangeSettings(
                api_url=sim.url, api_key=DEFAULT_API_KEY, api_secret=DEFAULT_API_SECRET
            ),
            trading=TradingSettings(
                mode="live", order_lookup_grace_seconds=0, order_lost_deadline_seconds=0
            ),
        )
        acc = LiveAccount(s, ledger, live=True, sleep=lambda x: time.sleep(min(x, 0.05)))
        acc.start()
        acc.execute(Action.BUY, Candle(0, price, price, price, price, 0))
        assert verify_live(ledger, sim) == (0, [])
        acc.exchange.create_order(
            "BTC/USDT", "market", "buy", 0.001, None, {"newClientOrderId": "crl-blind-resend"}
        )
        dups, problems = verify_live(ledger, sim)
        assert dups == 1 and any("crl-blind-resend" in p for p in problems)
