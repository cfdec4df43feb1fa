"""One retrain cycle (``chartrl retrain``; the daemon runs it nightly in a child process).

1. fetch the new candles;
2. fine-tune a copy of the champion on the most recent ``daemon.retrain_window_days`` (ending
   where the held-out days begin) into a challenger, in a hidden directory beside the champion;
3. evaluate champion and challenger with the walk-forward evaluation on the most recent
   ``daemon.eval_days`` (60 by default), which the challenger was not trained on (a champion that
   was is flagged); training and evaluation fill under the market's rules as the paper account does
   (``market_rules``: the stored market info), recorded in the result and the challenger's model.json;
4. promote the challenger only if it is comparable, its Sharpe beats the champion's by more than
   ``daemon.promote_margin + daemon.promote_se_multiple x`` the standard error of the Sharpe
   difference, and it passes the skill test (``daemon.promote_skill_p``); the rule and its
   statistics are in chartrl.daemon.promotion. The directories are swapped atomically
   (``renameat2(RENAME_EXCHANGE)`` where Linux has it, two renames otherwise) and the old champion
   is kept as ``champion.prev``.

Every cycle goes to the ledger (``retrain_results``, with both scores, the reason and buy-and-hold
over the same days) and the log. SIGTERM (the daemon stopping) ends the cycle cleanly: recorded as
failed, the challenger removed. The daemon notices the new champion at its next tick (its
``model.json`` has a new inode) and reloads.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from chartrl.account.ledger import Ledger
from chartrl.config.settings import Settings
from chartrl.daemon.finetune import fine_tune
from chartrl.daemon.promotion import decide, incomparable, score, sharpe_difference_se
from chartrl.daemon.retrain_swap import RetrainAborted, SigtermAborts, promote
from chartrl.errors import ChartrlError, CheckpointError, DataError, TemporaryError
from chartrl.logs import get_logger
from chartrl.market.store import CandleStore
from chartrl.timeframe import periods_per_year, timeframe_ms

log = get_logger("chartrl.retrain")


@dataclass
class RetrainResult:
    status: str
    """promoted | kept | failed."""
    champion: str | None = None
    challenger: str | None = None
    champion_score: float | None = None
    challenger_score: float | None = None
    reason: str | None = None
    """Why the challenger was promoted or not."""
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    symbol: str | None = None
    """The symbol retrained under model.per_symbol (None: the one model)."""

    def summary(self) -> str:
        of = f" of {self.symbol}" if self.symbol else ""
        if self.status == "failed":
            return f"retrain{of} failed: {self.error}"
        verb = (
            "promoted: the challenger is the new champion"
            if self.status == "promoted"
            else "kept the champion"
        )
        return (
            f"retrain{of} {verb} (Sharpe on the held-out days: champion {_fmt(self.champion_score)}, "
            f"challenger {_fmt(self.challenger_score)}; {self.reason}; {self.seconds:.0f} s)"
        )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# ------------------------------------------------------------------------------------ the cycle
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


SHARED_RETRAIN_MISSING = (
    "retraining one model on all of market.symbols ({symbols}) needs multi-series training "
    "(`chartrl train --series`, issue 14 item 1), which this chartrl does not have yet; set "
    "model.per_symbol = true (a model per symbol), or retrain one with `chartrl retrain --symbol X`"
)


def run_retrains(settings: Settings, **kw: Any) -> list[RetrainResult]:
    """Every configured symbol's retrain (``chartrl retrain``, the daemon's nightly child): one
    cycle per symbol under model.per_symbol, each on its own candles and champion, one failing
    never stopping the next; else the one model's cycle. Same keywords as :func:`run_retrain`."""
    from chartrl.daemon.lock import data_dir_lock

    symbols = settings.market.all_symbols
    if len(symbols) == 1:
        return [run_retrain(settings, **kw)]
    with data_dir_lock(settings.data_dir, "retrain"):
        if settings.model.per_symbol:
            return [_run_retrain(settings.for_symbol(sym), symbol=sym, **kw) for sym in symbols]
        error = SHARED_RETRAIN_MISSING.format(symbols=", ".join(symbols))
        with Ledger.for_data_dir(settings.data_dir) as ledger:
            rid = ledger.start_retrain(None)
            ledger.finish_retrain(rid, status="failed", error=error)
        log.error("retrain_finished", status="failed", error=error)
        return [RetrainResult("failed", error=error)]


def run_retrain(
    settings: Settings,
    *,
    fetch: bool = True,
    epochs: int | None = None,
    max_steps: int | None = None,
    progress: bool = False,
) -> RetrainResult:
    """One cycle of one series (market.symbol); never raises for an expected failure (recorded
    as ``failed`` instead). Several symbols go through :func:`run_retrains`.

    Refused (UsageError) while another process writes the data dir; the daemon's own retrain
    child runs under the daemon's lock."""
    from chartrl.daemon.lock import data_dir_lock

    if len(settings.market.all_symbols) > 1:
        raise ValueError("run_retrain retrains one series; use run_retrains for market.symbols")
    with data_dir_lock(settings.data_dir, "retrain"):
        return _run_retrain(
            settings, fetch=fetch, epochs=epochs, max_steps=max_steps, progress=progress
        )


def _run_retrain(
    settings: Settings,
    *,
    fetch: bool = True,
    epochs: int | None = None,
    max_steps: int | None = None,
    progress: bool = False,
    symbol: str | None = None,
) -> RetrainResult:
    from chartrl.backtest import walkforward
    from chartrl.chart.spec import ChartSpec
    from chartrl.daemon.model import model_version, resolve_device
    from chartrl.market.markets import fill_parameters, market_rules
    from chartrl.train.checkpoint import load_model, read_meta

    t0 = time.monotonic()
    champion = settings.model_dir
    ledger = Ledger.for_data_dir(settings.data_dir)
    result = RetrainResult("failed", symbol=symbol)
    rid: int | None = None
    challenger = champion.with_name(f".challenger-{os.getpid()}-{int(time.time())}")
    with SigtermAborts() as sigterm:
        try:
            meta = read_meta(champion)
            result.champion = model_version(champion, meta)
            rid = ledger.start_retrain(result.champion, symbol)
            log.info("retrain_started", champion=result.champion, model_dir=str(champion))
            if fetch:
                from chartrl.market.fetch import update_series

                try:
                    update_series(settings, progress=progress)
                except TemporaryError as exc:
                    log.warning("retrain_fetch_failed", error=str(exc), using="the stored candles")
            spec = ChartSpec(**meta["chart_spec"])
            ex, sym, tf = settings.exchange.id, settings.market.symbol, settings.market.timeframe
            candles = CandleStore(settings.data_dir).load(ex, sym, tf)
            train_part, eval_part, eval_start = _split(settings, candles, spec.window)
            in_sample = _trained_on(meta, eval_start)
            if in_sample:
                log.warning(
                    "retrain_champion_in_sample",
                    trained_until=in_sample,
                    eval_from=eval_start.isoformat(),
                    why="the champion was trained on some of the held-out days: its score there flatters it",
                )
            device = resolve_device(settings.model.device)
            # The fills the daemon's paper account gets (stored market info, as `chartrl backtest`):
            # the challenger is trained, and both models judged, under them.
            rules, rules_source = market_rules(settings)
            fine_tune(
                champion,
                challenger,
                train_part,
                settings,
                rules=rules,
                rules_source=rules_source,
                epochs=epochs or settings.daemon.retrain_epochs,
                max_steps=max_steps,
                device=device,
                progress=progress,
            )
            cash = settings.trading.initial_cash
            scores: dict[str, Any] = {}
            returns: dict[str, Any] = {}
            for name, path in (("champion", champion), ("challenger", challenger)):
                policy, m = load_model(path, device, expect_spec=spec, expect_series=(ex, sym, tf))
                if name == "challenger":
                    result.challenger = model_version(path, m)
                scores[name], run, _ = walkforward.evaluate_runs(
                    policy,
                    eval_part,
                    spec,
                    rules,
                    start=eval_start,
                    initial_cash=cash,
                    device=device,
                )
                returns[name] = run.equity[1:] / run.equity[:-1] - 1.0
            result.champion_score, result.challenger_score = (
                score(scores["champion"]),
                score(scores["challenger"]),
            )
            d = settings.daemon
            if incomparable(scores["champion"], d.min_eval_trades):
                returns["champion"] = returns["champion"] * 0.0  # judged against doing nothing
            se = sharpe_difference_se(
                returns["champion"],
                returns["challenger"],
                periods_per_year(tf),
                block=max(1, _DAY_MS // timeframe_ms(tf)),
            )
            promoted, result.reason = decide(
                scores["champion"],
                scores["challenger"],
                d.promote_margin,
                d.min_eval_trades,
                se=se,
                se_multiple=d.promote_se_multiple,
                skill_p=d.promote_skill_p,
            )
            buyhold = (scores["champion"].get("baselines") or {}).get("buyhold") or {}
            result.metrics = {
                "champion_score": result.champion_score,
                "challenger_score": result.challenger_score,
                "margin": d.promote_margin,
                "min_eval_trades": d.min_eval_trades,
                "sharpe_difference_se": se,
                "se_multiple": d.promote_se_multiple,
                "skill_p_threshold": d.promote_skill_p,
                "eval_returns": int(len(returns["challenger"])),
                "reason": result.reason,
                "eval_from": eval_start.isoformat(),
                "eval_days": d.eval_days,
                "train_from": train_part["timestamp"].iloc[0].isoformat()
                if len(train_part)
                else None,
                "champion_trained_until": (meta.get("data_range") or {}).get("until"),
                "champion_in_sample": bool(in_sample),
                "champion": _brief(scores["champion"]),
                "challenger": _brief(scores["challenger"]),
                # Context for both scores: what simply holding the coin did over the same days.
                "buyhold": {
                    "sharpe": buyhold.get("sharpe"),
                    "total_return": buyhold.get("total_return"),
                },
                "fills": fill_parameters(rules, rules_source),
            }
            log.info(
                "retrain_compared",
                promote=promoted,
                reason=result.reason,
                sharpe_difference_se=se,
                challenger_skill_p_value=scores["challenger"].get("skill_p_value"),
            )
            if promoted:
                sigterm.hold()
                promote(challenger, champion)
                result.status = "promoted"
            else:
                result.status = "kept"
        except (ChartrlError, ValueError, RuntimeError, OSError) as exc:
            # One line for the operator; the daemon keeps trading with the champion either way.
            result.status, result.error = (
                "failed",
                (str(exc).splitlines() or [type(exc).__name__])[0][:500],
            )
            if isinstance(exc, CheckpointError) and rid is None:
                result.error = f"no champion to retrain: {result.error}"
        except RetrainAborted as exc:
            result.status, result.error = (
                "failed",
                f"aborted by {exc} (the daemon is stopping?); the champion is unchanged",
            )
        finally:
            sigterm.hold()
            shutil.rmtree(challenger, ignore_errors=True)
            result.seconds = round(time.monotonic() - t0, 1)
            if rid is None:
                rid = ledger.start_retrain(result.champion, symbol)
            ledger.finish_retrain(
                rid,
                status=result.status,
                challenger=result.challenger,
                promoted=result.status == "promoted",
                metrics=result.metrics or None,
                error=result.error,
            )
            ledger.close()
    level = log.error if result.status == "failed" else log.info
    level(
        "retrain_finished",
        symbol=symbol,
        status=result.status,
        champion=result.champion,
        challenger=result.challenger,
        champion_score=result.champion_score,
        challenger_score=result.challenger_score,
        reason=result.reason,
        error=result.error,
        seconds=result.seconds,
    )
    return result


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
