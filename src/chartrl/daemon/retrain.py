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

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chartrl.account.ledger import Ledger
from chartrl.config.settings import Settings
from chartrl.daemon.finetune import fine_tune
from chartrl.daemon.retrain_judge import (  # noqa: F401 - _split, min_eval_candles re-exported
    HeldOut,
    Verdict,
    _split,
    held_out,
    judge,
    min_eval_candles,
)
from chartrl.daemon.retrain_swap import RetrainAborted, SigtermAborts, promote
from chartrl.errors import ChartrlError, CheckpointError
from chartrl.logs import get_logger

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
        if "per_symbol" in self.metrics:  # one model for several symbols: a verdict each
            return f"retrain{of} {verb} ({self.reason}; {self.seconds:.0f} s)"
        return (
            f"retrain{of} {verb} (Sharpe on the held-out days: champion {_fmt(self.champion_score)}, "
            f"challenger {_fmt(self.challenger_score)}; {self.reason}; {self.seconds:.0f} s)"
        )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def run_retrains(settings: Settings, **kw: Any) -> list[RetrainResult]:
    """Every configured symbol's retrain (``chartrl retrain``, the daemon's nightly child): one
    cycle per symbol under model.per_symbol, each on its own candles and champion, one failing
    never stopping the next; else the one model's cycle on every symbol at once
    (daemon/retrain_shared.py). Same keywords as :func:`run_retrain`."""
    from chartrl.daemon.lock import data_dir_lock

    symbols = settings.market.all_symbols
    if len(symbols) == 1:
        return [run_retrain(settings, **kw)]
    with data_dir_lock(settings.data_dir, "retrain"):
        if settings.model.per_symbol:
            return [_run_retrain(settings.for_symbol(sym), symbol=sym, **kw) for sym in symbols]
        from chartrl.daemon.retrain_shared import run_shared_retrain

        return [run_shared_retrain(settings, **kw)]


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


CycleBody = Callable[[RetrainResult, Any, Any, dict[str, Any], Any], Verdict]
"""``body(result, champion_dir, challenger_dir, champion_meta, device)``: fine-tune and judge."""


def run_cycle(settings: Settings, body: CycleBody, symbol: str | None = None) -> RetrainResult:
    """The frame of every cycle: the ledger row, SIGTERM, promotion, cleanup, the log event; the
    ``body`` fine-tunes the challenger and judges it. Never raises for an expected failure."""
    from chartrl.daemon.model import model_version, resolve_device
    from chartrl.train.checkpoint import read_meta

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
            verdict = body(
                result, champion, challenger, meta, resolve_device(settings.model.device)
            )
            result.challenger = verdict.challenger
            result.champion_score, result.challenger_score = (
                verdict.champion_score,
                verdict.challenger_score,
            )
            result.reason, result.metrics = verdict.reason, verdict.metrics
            if verdict.promoted:
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


def _run_retrain(
    settings: Settings,
    *,
    fetch: bool = True,
    epochs: int | None = None,
    max_steps: int | None = None,
    progress: bool = False,
    symbol: str | None = None,
) -> RetrainResult:
    """One series' cycle: fine-tune the champion on its recent candles, judge on its held-out days."""

    def body(
        result: RetrainResult, champion: Any, challenger: Any, meta: Any, device: Any
    ) -> Verdict:
        h = held_out(settings, meta, fetch=fetch, progress=progress)
        fine_tune(
            champion,
            challenger,
            h.train_part,
            settings,
            rules=h.rules,
            rules_source=h.rules_source,
            epochs=epochs or settings.daemon.retrain_epochs,
            max_steps=max_steps,
            device=device,
            progress=progress,
        )
        return judge(h, champion, challenger, meta, device)

    return run_cycle(settings, body, symbol)
