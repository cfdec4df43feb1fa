"""The retrain cycle of one model shared by every symbol of ``market.symbols``
(``model.per_symbol = false``).

The challenger is fine-tuned on every symbol's recent candles at once (multi-series training,
train/series.py: each chart inside one series, each series under its own fills), then judged on
each symbol's own held-out days by the single-series rule (chartrl.daemon.promotion). It is
promoted only when it wins on every symbol: the one model trades them all, so a challenger that
is better on BTC/USDT but worse on ETH/USDT would make ETH/USDT's trading worse. A symbol without
enough stored candles for a cycle is left out of this one (named in the result) rather than
failing it for the others; with none left the cycle fails.
"""

from __future__ import annotations

from typing import Any

from chartrl.config.settings import Settings
from chartrl.daemon.finetune import fine_tune_series
from chartrl.daemon.retrain import RetrainResult, run_cycle
from chartrl.daemon.retrain_judge import HeldOut, Verdict, held_out, judge
from chartrl.errors import DataError
from chartrl.logs import get_logger

log = get_logger("chartrl.retrain")

RULE = "promoted only if it wins on every symbol, each judged on its own held-out days"


def run_shared_retrain(
    settings: Settings,
    *,
    fetch: bool = True,
    epochs: int | None = None,
    max_steps: int | None = None,
    progress: bool = False,
) -> RetrainResult:
    """One cycle of the shared model (the caller holds the data-dir lock)."""
    symbols = settings.market.all_symbols

    def body(
        result: RetrainResult, champion: Any, challenger: Any, meta: Any, device: Any
    ) -> Verdict:
        parts: list[HeldOut] = []
        left_out: dict[str, str] = {}
        for sym in symbols:
            try:
                parts.append(
                    held_out(settings.for_symbol(sym), meta, fetch=fetch, progress=progress)
                )
            except DataError as exc:  # too little history for this one: the others go on
                left_out[sym] = str(exc)[:300]
                log.warning("retrain_symbol_left_out", symbol=sym, error=str(exc)[:300])
        if not parts:
            raise DataError(
                "no symbol of market.symbols has enough candles for a retrain: "
                + "; ".join(f"{s}: {e}" for s, e in left_out.items())
            )
        fine_tune_series(
            champion,
            challenger,
            parts,
            settings,
            epochs=epochs or settings.daemon.retrain_epochs,
            max_steps=max_steps,
            device=device,
            progress=progress,
        )
        verdicts = {
            p.settings.market.symbol: judge(p, champion, challenger, meta, device) for p in parts
        }
        promoted = all(v.promoted for v in verdicts.values())
        reason = "; ".join(f"{sym}: {v.reason}" for sym, v in verdicts.items())
        if left_out:
            reason += "; left out: " + ", ".join(left_out)
        metrics = {
            "rule": RULE,
            "reason": reason,
            "per_symbol": {sym: v.metrics for sym, v in verdicts.items()},
            "left_out": left_out,
        }
        challenger_version = next(iter(verdicts.values())).challenger
        return Verdict(promoted, reason, None, None, challenger_version, metrics)

    return run_cycle(settings, body, None)
