"""The resolved sweep, stored in its output directory: ``sweep.json`` and ``candles.parquet`` (the
judged series), plus ``series/<slug>.parquet`` for each further training series (``--series``).

The driver writes it once, before Ray starts; every trial (on this machine or another one that
sees the same directory) and every ``--resume`` reads it back, so a resumed sweep trains on the
very candles, folds, budget and fills it started with, whatever the store holds by then.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from chartrl.account.fills import MarketRules
from chartrl.backtest.walkforward import Fold
from chartrl.chart.spec import ChartSpec
from chartrl.errors import UsageError
from chartrl.experiments.params import Param, applicable, grid, parse_params
from chartrl.symbols import series_slug

PLAN_FILE = "sweep.json"
CANDLES_FILE = "candles.parquet"
SERIES_DIR = "series"


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
    companions: list[dict[str, Any]] = field(default_factory=list)
    """``--series A,B,..``: every series after the first, which only adds training candles (cut at
    each fold's training end): ``{"name": ..., "rules": MarketRules fields}``. ``meta`` then has
    ``training_series`` (all of them, the judged one first, with weights and fills)."""

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


def save_plan(
    plan: Plan, candles: pd.DataFrame, out: Path, companions: Sequence[pd.DataFrame] = ()
) -> None:
    """Write the plan and the candles it trains on into ``out``: the judged series' and, in the
    order of ``plan.companions``, the further training series'."""
    if len(companions) != len(plan.companions):
        raise ValueError(
            f"{len(plan.companions)} companion series planned, {len(companions)} given"
        )
    plan.save(out)
    candles.reset_index(drop=True).to_parquet(out / CANDLES_FILE, index=False)
    if companions:
        (out / SERIES_DIR).mkdir(exist_ok=True)
    for c, frame in zip(plan.companions, companions, strict=True):
        frame.reset_index(drop=True).to_parquet(_series_file(out, c["name"]), index=False)


def _series_file(out: Path, name: str) -> Path:
    return Path(out) / SERIES_DIR / f"{series_slug(name)}.parquet"


def load_companions(out: Path, plan: Plan) -> list[tuple[str, pd.DataFrame, MarketRules]]:
    """The further training series of a ``--series`` sweep: (name, candles, fill model) each."""
    return [
        (c["name"], pd.read_parquet(_series_file(out, c["name"])), MarketRules(**c["rules"]))
        for c in plan.companions
    ]


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


def read_training_series(out: Path) -> list[str]:
    """The names of every series a ``--series`` sweep in ``out`` trains on, the judged one first
    ([] for a one-series sweep, or without sweep.json): what the report names."""
    try:
        body = json.loads((Path(out) / PLAN_FILE).read_text())
    except FileNotFoundError:
        return []
    return [t["name"] for t in body["meta"].get("training_series") or []]
