"""The resolved sweep, stored in its output directory: ``sweep.json`` and ``candles.parquet``.

The driver writes it once, before Ray starts; every trial (on this machine or another one that
sees the same directory) and every ``--resume`` reads it back, so a resumed sweep trains on the
very candles, folds, budget and fills it started with, whatever the store holds by then.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from chartrl.account.fills import MarketRules
from chartrl.backtest.walkforward import Fold
from chartrl.chart.spec import ChartSpec
from chartrl.errors import UsageError
from chartrl.experiments.params import Param, applicable, grid, parse_params

PLAN_FILE = "sweep.json"
CANDLES_FILE = "candles.parquet"


@dataclass
class Plan:
    """Everything a trial needs besides its own unit (strategy, params, seed, fold)."""

    strategies: list[str]
    seeds: list[int]
    folds: list[Fold]
    spec: ChartSpec
    timeframe: str
    meta: dict[str, Any]
    """model.json's series, data_range and fills for every trial's model."""
    rules: MarketRules
    train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig fields given for every trial (the rest are TrainConfig's defaults)."""
    param_texts: list[str] = field(default_factory=list)
    """The --param specs as given (parsed again on load: one parser)."""
    search: str = "grid"
    trials: int = 1
    """--search optuna: configurations sampled per strategy."""
    initial_cash: float = 10_000.0
    device: str = "cpu"
    threads: int | None = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 1
    reference: str = "cnn"

    @property
    def params(self) -> list[Param]:
        return parse_params(self.param_texts)

    def cells(self) -> list[tuple[str, int]]:
        """(strategy, index into ``grid(params)``) of every grid configuration a strategy trains."""
        configs = grid(self.params)
        return [
            (s, i)
            for s in self.strategies
            for i, c in enumerate(configs)
            if applicable(s, {**self.train, **c})
        ]

    def save(self, out: Path) -> None:
        body = asdict(self)
        body["spec"] = self.spec.model_dump(mode="json")
        body["folds"] = [asdict(f) for f in self.folds]
        out.mkdir(parents=True, exist_ok=True)
        (out / PLAN_FILE).write_text(json.dumps(body, indent=2, default=str) + "\n")


def save_plan(plan: Plan, candles: pd.DataFrame, out: Path) -> None:
    """Write the plan and the candles it trains on into ``out``."""
    plan.save(out)
    candles.reset_index(drop=True).to_parquet(out / CANDLES_FILE, index=False)


def load_plan(out: Path) -> Plan:
    """The plan stored in ``out`` (UsageError when there is none)."""
    path = Path(out) / PLAN_FILE
    if not path.is_file():
        raise UsageError(
            f"--resume {out}: no sweep there ({PLAN_FILE} missing); start it without --resume"
        )
    body = json.loads(path.read_text())
    body["spec"] = ChartSpec(**body["spec"])
    body["rules"] = MarketRules(**body["rules"])
    body["folds"] = [_fold(f) for f in body["folds"]]
    if "stages" in body["train"]:
        body["train"]["stages"] = tuple(body["train"]["stages"])
    return Plan(**body)


def load_candles(out: Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pd.read_parquet(Path(out) / CANDLES_FILE, columns=columns)


def _fold(f: dict[str, Any]) -> Fold:
    return Fold(f["index"], tuple(f["train"]), tuple(f["val"]), tuple(f["test"]))


def read_folds(out: Path) -> list[Fold] | None:
    """The folds stored in ``out`` (None when it holds no sweep.json), without the rest of the
    plan: what the report draws."""
    try:
        body = json.loads((Path(out) / PLAN_FILE).read_text())
    except FileNotFoundError:
        return None
    return [_fold(f) for f in body["folds"]]
