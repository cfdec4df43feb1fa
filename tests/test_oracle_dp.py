"""The fee-aware optimal oracle: its DP values match a brute force over every long/flat path."""

from __future__ import annotations

import itertools

import numpy as np

from chartrl.strategies.oracle import optimal_actions, optimal_values

FEE, SLIP = 0.001, 5.0


def _path_gain(o, c, start_pos, decisions, penalty):
    """Log equity gain of one decision path simulated step by step (the reference)."""
    slip = SLIP / 1e4
    pos, gain = start_pos, 0.0
    for t, want in enumerate(decisions):
        if pos:
            gain += np.log(o[t + 1] / c[t])
        if want != pos:
            gain -= (
                np.log((1 + slip) * (1 + FEE)) + penalty
                if want
                else -np.log((1 - slip) * (1 - FEE))
            )
            pos = want
        if pos:
            gain += np.log(c[t + 1] / o[t + 1])
    return gain


def test_dp_values_equal_brute_force_over_all_paths() -> None:
    rng = np.random.default_rng(0)
    n = 8
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]] * np.exp(rng.normal(0, 0.002, n))
    for penalty in (0.0, 0.005):
        q = optimal_values(o, c, FEE, SLIP, penalty)
        for p in (0, 1):
            best = max(
                _path_gain(o, c, p, path, penalty)
                for path in itertools.product((0, 1), repeat=n - 1)
            )
            assert np.isclose(q[0, p].max(), best)


def test_penalty_cuts_round_trips_and_flat_prices_never_trade() -> None:
    rng = np.random.default_rng(1)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 2000)))
    o = np.r_[c[0], c[:-1]]
    entries = []
    for penalty in (0.0, 0.02, 0.1):
        acts = optimal_actions(optimal_values(o, c, FEE, SLIP, penalty))
        pos, n_buys = 0, 0
        for t in range(len(c)):
            a = acts[t, pos]
            if a == 1:
                pos, n_buys = 1, n_buys + 1
            elif a == 2:
                pos = 0
        entries.append(n_buys)
    assert entries[0] > entries[1] > entries[2]
    flat = np.full(50, 100.0)
    assert (optimal_actions(optimal_values(flat, flat)) == 0).all()
