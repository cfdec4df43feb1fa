"""Promotion that means something: a comparable challenger must beat the champion's Sharpe by more
than the standard error of the difference and pass the skill test; otherwise the champion stays
and the reason is recorded."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from chartrl.config.settings import Settings
from chartrl.daemon.promotion import decide, sharpe_difference_se
from test_daemon import RETRAIN, _retrain_settings, _save, _settings, candles, sim  # noqa: F401

HOURLY = 24 * 365


def m(sharpe: float | None, trades: int = 5, p: float | None = 0.01, **kw) -> dict:
    return {"sharpe": sharpe, "trades": trades, "skill_p_value": p, **kw}


def test_defaults_judge_on_sixty_days_with_the_se_and_the_skill_test() -> None:
    d = Settings().daemon
    assert d.eval_days >= 60 and d.promote_se_multiple == 1.0 and d.promote_skill_p == 0.05
    assert Settings.model_validate({"daemon": {"eval_days": 90}}).daemon.eval_days == 90


def test_a_challenger_must_beat_the_champion_by_more_than_the_se() -> None:
    champ = m(1.0)
    ok, why = decide(champ, m(1.8), 0.0, 1, se=0.5)
    assert ok and "beats the champion's by 0.800, more than" in why and "p = 0.010 <=" in why
    ok, why = decide(champ, m(1.4), 0.0, 1, se=0.5)  # better, but within one SE: a coin flip
    assert not ok
    assert why.startswith("challenger's Sharpe beats the champion's by 0.400, not more than")
    assert "0 + 1 x 0.500 = 0.500" in why and "(met: skill test p = 0.010" in why
    assert decide(champ, m(1.4), 0.0, 1, se=0.5, se_multiple=0.5)[0] is True
    assert decide(champ, m(1.4), 0.5, 1, se=0.0)[0] is False  # the margin still applies on top
    assert decide(champ, m(1.8), 0.0, 1, se=None)[0] is False


def test_a_challenger_must_pass_the_skill_test() -> None:
    ok, why = decide(m(1.0), m(3.0, p=0.31), 0.0, 1, se=0.5)
    assert not ok and why.startswith("skill test p = 0.310 > daemon.promote_skill_p = 0.05")
    assert "(met: challenger's Sharpe beats" in why
    assert decide(m(1.0), m(3.0, p=None), 0.0, 1, se=0.5)[0] is False  # untested is not skilled
    assert decide(m(1.0), m(3.0, p=0.31), 0.0, 1, se=0.5, skill_p=1.0)[0] is True


def test_comparability_comes_first_and_an_idle_champion_stands_at_zero() -> None:
    losing, idle = m(-14.6, trades=11), m(None, trades=0)
    assert decide(losing, idle, 0.0, 1, se=1.0) == (
        False,
        "challenger not comparable: no Sharpe (its equity never moved)",
    )
    # Against a champion that never traded, the challenger must beat doing nothing (Sharpe 0).
    ok, why = decide(idle, losing, 0.0, 1, se=1.0)
    assert not ok and why.startswith("champion not comparable: no Sharpe")
    assert "trails doing nothing (Sharpe 0) by 14.600" in why
    assert decide(idle, m(2.5), 0.0, 1, se=1.0)[0] is True
    held = m(0.5, trades=0, open_position_at_end=True)  # bought once and held: one decision
    ok, why = decide(losing, held, 0.0, 3, se=0.1)
    assert (
        not ok
        and why == "challenger not comparable: 1 trade(s), fewer than daemon.min_eval_trades = 3"
    )


def test_se_of_the_sharpe_difference_matches_theory_and_shrinks_with_the_window() -> None:
    """Independent iid hourly returns: Var(SR_a - SR_b) ~ 2 / T per candle (Jobson-Korkie with
    rho = 0 and small Sharpes), annualised x sqrt(8760): 60 days ~ 3.5, 14 days ~ 7.2."""
    rng = np.random.default_rng(3)
    for days in (14, 60):
        t = days * 24
        a, b = rng.normal(0, 0.01, t), rng.normal(0, 0.01, t)
        se = sharpe_difference_se(a, b, HOURLY, block=24)
        assert se == pytest.approx(math.sqrt(2 / t) * math.sqrt(HOURLY), rel=0.15), days
    # Correlated models (the challenger is a fine-tuned champion) differ less: a smaller SE.
    a = rng.normal(0, 0.01, 1440)
    b = a + rng.normal(0, 0.003, 1440)
    assert sharpe_difference_se(a, b, HOURLY, 24) < 0.5 * sharpe_difference_se(
        a, rng.normal(0, 0.01, 1440), HOURLY, 24
    )
    assert sharpe_difference_se(a, a, HOURLY, 24) == 0.0
    assert sharpe_difference_se(a[:1], a[:1], HOURLY, 24) is None
    with pytest.raises(ValueError, match="differ in length"):
        sharpe_difference_se(a, a[:-1], HOURLY, 24)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(10, 300),
    st.floats(1e-3, 1e3),
    st.integers(1, 48),
)
def test_se_is_symmetric_and_scale_free(seed: int, n: int, scale: float, block: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 0.01, n), rng.normal(0.001, 0.02, n)
    se = sharpe_difference_se(a, b, HOURLY, block)
    assert se is not None and se >= 0
    assert sharpe_difference_se(b, a, HOURLY, block) == pytest.approx(se, rel=1e-9, abs=1e-12)
    scaled = sharpe_difference_se(a * scale, b * scale, HOURLY, block)
    assert scaled == pytest.approx(se, rel=1e-6, abs=1e-9)  # a Sharpe has no units


def _retrain(tmp_path, sim, monkeypatch, **daemon):  # noqa: F811
    from chartrl.daemon import retrain

    _retrain_settings(tmp_path, sim, always=1)  # a champion that buys and holds
    s = _settings(tmp_path, sim, save=False, daemon=RETRAIN | daemon)
    monkeypatch.setattr(
        retrain, "fine_tune", lambda champion, out, *a, **k: _save(out, "cnnrnn", always=1)
    )
    with capture_logs() as logs:
        r = retrain.run_retrain(s, fetch=False)
    return s, r, logs


@pytest.mark.parametrize(
    "rule,status,reason",
    [
        # The challenger is the champion's twin: no Sharpe lead, so no promotion.
        ({"promote_margin": 0.0, "promote_se_multiple": 1.0}, "kept", "by 0.000, not more than"),
        # Any Sharpe passes; buying and holding all the window is no skill (p = 1): kept.
        ({}, "kept", "skill test p = 1.000 > daemon.promote_skill_p = 0.05"),
        ({"promote_skill_p": 1.0}, "promoted", "more than"),
    ],
)
def test_retrain_records_why_the_champion_stays(
    tmp_path,
    sim,  # noqa: F811
    monkeypatch,
    rule,
    status,
    reason,
) -> None:
    from chartrl.account.ledger import Ledger

    daemon = {"promote_skill_p": 0.05} | rule
    s, r, logs = _retrain(tmp_path, sim, monkeypatch, **daemon)
    assert r.status == status, (r.error, r.reason)
    assert reason in r.reason
    with Ledger.for_data_dir(s.data_dir) as led:
        row = led.retrain_results()[0]
    assert row["status"] == status and row["metrics"]["reason"] == r.reason
    assert row["metrics"]["sharpe_difference_se"] == pytest.approx(0.0, abs=1e-12)  # twins
    assert (
        row["metrics"]["eval_returns"] == 2 * 24 - 1
        and row["metrics"]["skill_p_threshold"] == (daemon["promote_skill_p"])
    )
    assert row["metrics"]["challenger"]["skill_p_value"] == 1.0
    done = [e for e in logs if e["event"] == "retrain_finished"]
    assert done and done[0]["reason"] == r.reason and done[0]["status"] == status
