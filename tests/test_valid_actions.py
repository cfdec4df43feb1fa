"""Invalid-action masking: a buy while long or a sell while flat is a hold in the fill model, so
no policy decision, exploration step or DQN target ever uses the Q-value of such an order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chartrl.account.fills import MarketRules
from chartrl.strategies.base import Policy, greedy, valid_actions
from chartrl.testing.synthetic import synthetic_candles
from chartrl.train.env import CandleArrays
from chartrl.train.evaluation import greedy_run

FLAT, LONG = [0.0, 0.0], [1.0, -0.02]


@pytest.mark.parametrize(
    ("q", "position", "expected"),
    [
        ([0.0, -1.0, 5.0], FLAT, 0),  # sell is best but does nothing while flat: hold
        ([0.0, 1.0, 5.0], FLAT, 1),  # the best valid action while flat is buy
        ([0.0, 5.0, -1.0], LONG, 0),  # buy is best but does nothing while long: hold
        ([0.0, 5.0, 1.0], LONG, 2),
        ([1.0, 1.0, 1.0], FLAT, 0),  # a tie holds
        ([1.0, 1.0, 1.0], LONG, 0),
    ],
)
def test_greedy_picks_the_best_action_that_changes_something(q, position, expected) -> None:
    assert int(greedy(torch.tensor([q]), torch.tensor([position]))[0]) == expected


def test_valid_actions_by_position_batched() -> None:
    pos = torch.tensor([[FLAT, LONG], [LONG, FLAT]])  # (2, 2, 2): a batch of sequences
    mask = valid_actions(pos)
    assert mask.shape == (2, 2, 3)
    assert mask[0, 0].tolist() == [True, True, False]
    assert mask[0, 1].tolist() == [True, False, True]


class _Constant(Policy):
    """Q = (1, 2, 0) on every chart: buy beats hold beats sell."""

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(frames), 1)

    def head(self, feats, position, hidden=None):
        return torch.tensor([1.0, 2.0, 0.0]).expand(*feats.shape[:-1], 3), hidden


class _Frames:
    def get(self, idx) -> torch.Tensor:
        return torch.zeros(len(np.asarray(idx).reshape(-1)), 1, 2, 2)


def test_a_greedy_run_never_answers_an_order_that_does_nothing() -> None:
    arrays = CandleArrays(synthetic_candles(60, seed=3))
    run = greedy_run(_Constant(), _Frames(), arrays, np.arange(5, 50), 1_000.0, MarketRules())
    # It buys once, then holds: while long, buy (its best score) is masked and hold beats sell.
    # Unmasked it would answer buy at every candle, 44 orders that do nothing.
    assert run.actions[0] == 1
    assert (run.actions[1:] == 0).all()
