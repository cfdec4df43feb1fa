"""What a retrain cycle judges on: one symbol's recent candles split into fine-tuning and held-out
days (:func:`held_out`), and champion against challenger on those days by the promotion rule of
chartrl.daemon.promotion (:func:`judge`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from chartrl.config.settings import Settings
from chartrl.daemon.promotion import decide, incomparable, score, sharpe_difference_se
from chartrl.errors import DataError, TemporaryError
from chartrl.logs import get_logger
from chartrl.market.store import CandleStore
from chartrl.timeframe import periods_per_year, timeframe_ms

log = get_logger("chartrl.retrain")

_DAY_MS = 86_400_000


def min_eval_candles(timeframe: str) -> int:
    """Held-out candles a Sharpe comparison needs: a day of them, and at least 7 (a week of daily)."""
    return max(7, _DAY_MS // timeframe_ms(timeframe))


def _split(
    settings: Settings, candles: pd.DataFrame, window: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    d, tf = settings.daemon, settings.market.timeframe
    step = timeframe_ms(tf)
    need = min_eval_candles(tf)
    if d.eval_days * _DAY_MS // step < need:
        raise DataError(
            f"daemon.eval_days = {d.eval_days} holds {d.eval_days * _DAY_MS // step} {tf} candles, too few to compare "
            f"champion and challenger (at least {need}); raise daemon.eval_days to {math.ceil(need * step / _DAY_MS)} or more"
        )
    last = candles["timestamp"].iloc[-1]
    eval_start = last - pd.Timedelta(days=d.eval_days) + pd.Timedelta(milliseconds=step)
    train_start = eval_start - pd.Timedelta(days=d.retrain_window_days)
    train_part = candles[
        (candles["timestamp"] >= train_start) & (candles["timestamp"] < eval_start)
    ].reset_index(drop=True)
    # The evaluation's first charts need a window of history; those candles are drawn, not traded.
    first_eval = int(candles["timestamp"].searchsorted(eval_start))
    eval_part = candles.iloc[max(first_eval - window - 150, 0) :].reset_index(drop=True)
    if first_eval < window or len(candles) - first_eval < need:
        raise DataError(
            f"not enough candles for a retrain: {len(candles)} {tf} candles stored from {candles['timestamp'].iloc[0]:%Y-%m-%d}; "
            f"the held-out last {d.eval_days} days need {need} candles in them and {window} of chart history before them; "
            "fetch older history (market.since, then `chartrl fetch`) or lower daemon.eval_days"
        )
    return train_part, eval_part, eval_start


def _trained_on(meta: dict[str, Any], eval_start: pd.Timestamp) -> str | None:
    """The end of the model's training data when it reaches into the held-out days, else None."""
    until = (meta.get("data_range") or {}).get("until")
    if not until:
        return None
    ts = pd.Timestamp(until)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
    return str(until) if ts >= eval_start else None


@dataclass
class HeldOut:
    """One symbol's candles for a cycle: what to fine-tune on, what to judge on, and its fills."""

    settings: Settings
    """The settings of that one symbol."""
    train_part: pd.DataFrame
    eval_part: pd.DataFrame
    eval_start: pd.Timestamp
    rules: Any
    rules_source: str
    in_sample: str | None
    """Where the champion's training data reaches into the held-out days (its score flatters it)."""


def held_out(settings: Settings, meta: dict[str, Any], *, fetch: bool, progress: bool) -> HeldOut:
    """Fetch (unless not ``fetch``), load and split market.symbol's candles, with its fills."""
    from chartrl.market.markets import market_rules

    if fetch:
        from chartrl.market.fetch import update_series

        try:
            update_series(settings, progress=progress)
        except TemporaryError as exc:
            log.warning("retrain_fetch_failed", error=str(exc), using="the stored candles")
    ex, sym, tf = settings.exchange.id, settings.market.symbol, settings.market.timeframe
    candles = CandleStore(settings.data_dir).load(ex, sym, tf)
    train_part, eval_part, eval_start = _split(settings, candles, meta["chart_spec"]["window"])
    in_sample = _trained_on(meta, eval_start)
    if in_sample:
        log.warning(
            "retrain_champion_in_sample",
            symbol=sym,
            trained_until=in_sample,
            eval_from=eval_start.isoformat(),
            why="the champion was trained on some of the held-out days: its score there flatters it",
        )
    # The fills the daemon's paper account gets (stored market info, as `chartrl backtest`): the
    # challenger is trained, and both models judged, under them.
    rules, rules_source = market_rules(settings)
    return HeldOut(settings, train_part, eval_part, eval_start, rules, rules_source, in_sample)


@dataclass
class Verdict:
    promoted: bool
    reason: str
    champion_score: float | None
    challenger_score: float | None
    challenger: str | None
    metrics: dict[str, Any]


def judge(
    h: HeldOut,
    champion: Any,
    challenger: Any,
    meta: dict[str, Any],
    device: Any,
) -> Verdict:
    """Champion against challenger on ``h``'s held-out days, by chartrl.daemon.promotion's rule.
    Either may have learnt from other series too (the one model of several symbols, a champion
    taken from another symbol): a transfer, logged; another timeframe is refused."""
    from chartrl.backtest import walkforward
    from chartrl.chart.spec import ChartSpec
    from chartrl.daemon.model import model_version
    from chartrl.market.markets import fill_parameters
    from chartrl.train.checkpoint import load_model

    s, d = h.settings, h.settings.daemon
    ex, sym, tf = s.exchange.id, s.market.symbol, s.market.timeframe
    spec = ChartSpec(**meta["chart_spec"])
    scores: dict[str, Any] = {}
    returns: dict[str, Any] = {}
    version = None
    for name, path in (("champion", champion), ("challenger", challenger)):
        policy, m = load_model(
            path, device, expect_spec=spec, expect_series=(ex, sym, tf), allow_transfer=True
        )
        if name == "challenger":
            version = model_version(path, m)
        scores[name], run, _ = walkforward.evaluate_runs(
            policy,
            h.eval_part,
            spec,
            h.rules,
            start=h.eval_start,
            initial_cash=s.trading.initial_cash,
            device=device,
        )
        returns[name] = run.equity[1:] / run.equity[:-1] - 1.0
    champion_score, challenger_score = score(scores["champion"]), score(scores["challenger"])
    if incomparable(scores["champion"], d.min_eval_trades):
        returns["champion"] = returns["champion"] * 0.0  # judged against doing nothing
    se = sharpe_difference_se(
        returns["champion"],
        returns["challenger"],
        periods_per_year(tf),
        block=max(1, _DAY_MS // timeframe_ms(tf)),
    )
    promoted, reason = decide(
        scores["champion"],
        scores["challenger"],
        d.promote_margin,
        d.min_eval_trades,
        se=se,
        se_multiple=d.promote_se_multiple,
        skill_p=d.promote_skill_p,
    )
    buyhold = (scores["champion"].get("baselines") or {}).get("buyhold") or {}
    metrics = {
        "champion_score": champion_score,
        "challenger_score": challenger_score,
        "margin": d.promote_margin,
        "min_eval_trades": d.min_eval_trades,
        "sharpe_difference_se": se,
        "se_multiple": d.promote_se_multiple,
        "skill_p_threshold": d.promote_skill_p,
        "eval_returns": int(len(returns["challenger"])),
        "reason": reason,
        "eval_from": h.eval_start.isoformat(),
        "eval_days": d.eval_days,
        "train_from": h.train_part["timestamp"].iloc[0].isoformat() if len(h.train_part) else None,
        "champion_trained_until": (meta.get("data_range") or {}).get("until"),
        "champion_in_sample": bool(h.in_sample),
        "champion": _brief(scores["champion"]),
        "challenger": _brief(scores["challenger"]),
        # Context for both scores: what simply holding the coin did over the same days.
        "buyhold": {"sharpe": buyhold.get("sharpe"), "total_return": buyhold.get("total_return")},
        "fills": fill_parameters(h.rules, h.rules_source),
    }
    log.info(
        "retrain_compared",
        symbol=sym,
        promote=promoted,
        reason=reason,
        sharpe_difference_se=se,
        challenger_skill_p_value=scores["challenger"].get("skill_p_value"),
    )
    return Verdict(promoted, reason, champion_score, challenger_score, version, metrics)


def _brief(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "sharpe",
        "total_return",
        "max_drawdown",
        "trades",
        "open_position_at_end",
        "final_equity",
        "exposure",
        "trades_per_week",
        "skill_p_value",
        "skill_percentile",
    )
    return {k: metrics.get(k) for k in keys}
