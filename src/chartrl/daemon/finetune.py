"""Fine-tuning a challenger from the champion's weights on recent candles (one retrain step)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from chartrl.account.fills import MarketRules
from chartrl.config.settings import Settings
from chartrl.logs import get_logger

log = get_logger("chartrl.retrain")


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
    from chartrl.train.dqn import train, train_config
    from chartrl.train.env import prepare_data

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
    spec = ChartSpec(**meta["chart_spec"])
    data = prepare_data(candles, spec, settings.market.timeframe, cfg.validation_fraction)
    new_meta = {
        "chart_spec": spec,
        "series": meta["series"],
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
