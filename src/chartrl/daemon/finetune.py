"""Fine-tuning a challenger from the champion's weights on recent candles (one retrain step)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from chartrl.account.fills import MarketRules
from chartrl.config.settings import Settings
from chartrl.logs import get_logger

log = get_logger("chartrl.retrain")


def _continued(champion: Path, out: Path, epochs: int, max_steps: int | None) -> tuple:
    """The champion's meta, the training config that continues it for ``epochs`` more DQN
    epochs, and whether it resumes (``out`` then holds a copy of the champion to continue)."""
    from chartrl.train import checkpoint as ckpt
    from chartrl.train.dqn import train_config

    meta = ckpt.read_meta(champion)
    cfg = train_config(meta.get("hyperparameters") or {})
    counters = meta.get("counters") or {}
    resumable = (champion / ckpt.TRAIN_STATE_FILE).is_file()
    if resumable:
        # Resuming a copy continues the champion: its weights, target network, optimiser state.
        shutil.copytree(champion, out, ignore=shutil.ignore_patterns("tb"))
        cfg = replace(cfg, stages=("dqn",), epochs=int(counters.get("dqn_epochs", 0)) + epochs)
    else:
        log.warning(
            "retrain_from_scratch",
            champion=str(champion),
            why=f"no {ckpt.TRAIN_STATE_FILE} to continue from",
        )
        cfg = replace(cfg, stages=("imitation", "dqn"), epochs=epochs)
    if max_steps is not None:
        cfg = replace(cfg, max_steps_per_epoch=max_steps)
    return meta, cfg, resumable


def fine_tune(
    champion: Path,
    out: Path,
    candles: pd.DataFrame,
    settings: Settings,
    *,
    rules: MarketRules,
    rules_source: str,
    epochs: int,
    max_steps: int | None = None,
    device: Any = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train a challenger in ``out`` from the champion's weights on ``candles``, under the fill
    ``rules`` it will trade under (from ``rules_source``, recorded in its model.json); its meta."""
    from chartrl.chart.spec import ChartSpec
    from chartrl.market.markets import fill_parameters
    from chartrl.train import checkpoint as ckpt
    from chartrl.train.dqn import train
    from chartrl.train.env import prepare_data

    meta, cfg, resumable = _continued(champion, out, epochs, max_steps)
    spec = ChartSpec(**meta["chart_spec"])
    data = prepare_data(candles, spec, settings.market.timeframe, cfg.validation_fraction)
    new_meta = {
        "chart_spec": spec,
        # The series it is fine-tuned on (a per-symbol champion may have come from another).
        "series": {
            "exchange": settings.exchange.id,
            "symbol": settings.market.symbol,
            "timeframe": settings.market.timeframe,
        },
        "data_range": {
            "from": candles["timestamp"].iloc[0].isoformat(),
            "until": candles["timestamp"].iloc[-1].isoformat(),
            "candles": len(candles),
            "source": f"store:{settings.data_dir}",
        },
        "parent": meta.get("weights_sha256", "")[:12] or None,
        "fills": fill_parameters(rules, rules_source),
    }
    train(
        meta["strategy"],
        data,
        cfg,
        out,
        new_meta,
        device=device,
        rules=rules,
        initial_cash=settings.trading.initial_cash,
        resume=resumable,
        progress=progress,
    )
    return ckpt.read_meta(out)


def fine_tune_series(
    champion: Path,
    out: Path,
    parts: Sequence[Any],
    settings: Settings,
    *,
    epochs: int,
    max_steps: int | None = None,
    device: Any = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`fine_tune` on several symbols at once (one model for market.symbols): ``parts`` are
    their :class:`~chartrl.daemon.retrain_judge.HeldOut`, each trained on its own candles under
    its own fills (train/series.py keeps every chart inside one series); model.json lists them
    all in ``training_series``, the first standing for the model in ``series``."""
    from chartrl.chart.spec import ChartSpec
    from chartrl.market.markets import fill_parameters
    from chartrl.symbols import series_name
    from chartrl.train import checkpoint as ckpt
    from chartrl.train.dqn import train
    from chartrl.train.series import prepare_series

    meta, cfg, resumable = _continued(champion, out, epochs, max_steps)
    spec = ChartSpec(**meta["chart_spec"])
    tf = settings.market.timeframe
    names = [series_name(p.settings.exchange.id, p.settings.market.symbol, tf) for p in parts]
    data = prepare_series(
        [(n, p.train_part) for n, p in zip(names, parts, strict=True)],
        spec,
        tf,
        cfg.validation_fraction,
        rules=[p.rules for p in parts],
    )
    first = parts[0].train_part
    new_meta = {
        "chart_spec": spec,
        "series": {
            "exchange": settings.exchange.id,
            "symbol": parts[0].settings.market.symbol,
            "timeframe": tf,
        },
        "data_range": {
            "from": first["timestamp"].iloc[0].isoformat(),
            "until": first["timestamp"].iloc[-1].isoformat(),
            "candles": len(first),
            "source": f"store:{settings.data_dir}",
        },
        "training_series": [
            {
                "name": n,
                "exchange": p.settings.exchange.id,
                "symbol": p.settings.market.symbol,
                "timeframe": tf,
                "weight": None,
                "fills": fill_parameters(p.rules, p.rules_source),
                **part.info,
            }
            for n, p, part in zip(names, parts, data.series, strict=True)
        ],
        "parent": meta.get("weights_sha256", "")[:12] or None,
        "fills": fill_parameters(parts[0].rules, parts[0].rules_source),
    }
    train(
        meta["strategy"],
        data,
        cfg,
        out,
        new_meta,
        device=device,
        rules=parts[0].rules,
        initial_cash=settings.trading.initial_cash,
        resume=resumable,
        progress=progress,
    )
    return ckpt.read_meta(out)
