"""Skill test: worked example by hand, lookahead passes, exposure alone does not."""

import math

import numpy as np

from chartrl.backtest.skill import skill_test


def _blocks_from_positions(pos: np.ndarray) -> np.ndarray:
    """(entry, exit) fill indices of a long/flat path; pos[k] = long during fill index k's candle."""
    blocks, entry = [], None
    for k in range(1, len(pos)):
        if pos[k] and entry is None:
            entry = k
        elif not pos[k] and entry is not None:
            blocks.append((entry, k))
            entry = None
    if entry is not None:
        blocks.append((entry, len(pos)))
    return np.asarray(blocks, dtype=np.int64).reshape(-1, 2)


def test_worked_example_by_hand() -> None:
    # opens at fill indices 0..3, one trip of 1 candle; n=3, slack = 3 - 1 = 2: starts 1, 2 or 3.
    opens = np.array([100.0, 100.0, 110.0, 121.0])
    fee, slip = 0.001, 0.0
    blocks = np.array([[1, 2]])  # buy at 100, sell at 110
    out = skill_test(opens, 121.0, blocks, fee, 0.0, sims=2000, seed=1)
    c = math.log((1 - fee) / (1 + fee))
    assert math.isclose(out["skill_log_return"], math.log(1.1) + c)
    # Rivals: (1,2) same log(1.1)+c; (2,3) log(1.1)+c; (3, mark at close 121) log(1)+log(1/(1+fee)).
    # So the model ties 2/3 of rivals and beats 1/3: percentile ~ 100*(1/3 + 0.5*2/3) = 66.7.
    assert abs(out["skill_percentile"] - 66.7) < 3.0
    assert 0.6 < out["skill_p_value"] < 0.73
    del slip


def test_lookahead_policy_is_skilled_and_exposure_is_not() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    r = rng.normal(0.0005, 0.01, n)  # rising market
    opens = 100 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))
    # Lookahead: long over candle k when the next open is higher (knows the future).
    pos = np.zeros(n + 1, dtype=bool)
    pos[1:n] = opens[2:] > opens[1:n]
    cheat = skill_test(opens, opens[-1], _blocks_from_positions(pos), 0.0, 0.0, sims=1000)
    assert cheat["skill_p_value"] < 0.01
    assert cheat["skill_percentile"] > 99
    # High exposure, no timing: long 90 % of the time at random places, in a rising market.
    hold = np.ones(n + 1, dtype=bool)
    for s in rng.choice(np.arange(1, n - 30), size=10, replace=False):
        hold[s : s + 30] = False
    dumb = skill_test(opens, opens[-1], _blocks_from_positions(hold), 0.001, 5.0, sims=1000)
    assert dumb["skill_log_return"] > 0  # it made money ...
    assert dumb["skill_p_value"] > 0.05  # ... and that is not skill


def test_buy_and_hold_is_not_skilled() -> None:
    opens = np.linspace(100, 200, 500)
    out = skill_test(opens, 201.0, np.array([[1, 500]]), 0.001, 5.0)
    assert out["skill_p_value"] > 0.5


def test_seeded_and_no_trades() -> None:
    opens = 100 + np.sin(np.arange(400) / 7.0)
    b = np.array([[3, 10], [50, 60], [200, 230]])
    assert skill_test(opens, 100.0, b, 0.001, 5.0, seed=3) == skill_test(
        opens, 100.0, b, 0.001, 5.0, seed=3
    )
    empty = skill_test(opens, 100.0, np.zeros((0, 2)), 0.001, 5.0)
    assert empty["skill_p_value"] == 1.0
