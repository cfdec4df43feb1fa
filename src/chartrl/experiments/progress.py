"""The live progress table of a sweep (rich): trials running, done and failed, and the best
validation score so far. A Ray Tune callback, so it sees every trial wherever it runs."""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback


class ProgressTable(Callback):
    """Counts trials by state and keeps the best validation score; ``live`` renders it."""

    def __init__(self, total: int, show: bool = True) -> None:
        self.total = total
        self.running: set[str] = set()
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.best: tuple[float, str] = (-math.inf, "")
        self._live: Any = None
        if show:
            from rich.live import Live

            self._live = Live(self.table(), refresh_per_second=2, transient=False)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment; a terminal display is not state.
        return {**self.__dict__, "_live": None}

    def __enter__(self) -> ProgressTable:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self.table())
            self._live.__exit__(*exc)

    def table(self) -> Any:
        from rich.table import Table

        t = Table(title="chartrl sweep", show_lines=False)
        for col in ("running", "done", "failed", "pending", "best validation Sharpe"):
            t.add_column(col, justify="right")
        pending = max(self.total - len(self.running) - len(self.done) - len(self.failed), 0)
        best = "-" if not self.best[1] else f"{self.best[0]:.3f} ({self.best[1]})"
        t.add_row(
            str(len(self.running)), str(len(self.done)), str(len(self.failed)), str(pending), best
        )
        return t

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.table())

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self.failed.discard(trial.trial_id)  # a retry
        self._refresh()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        score = result.get("score")
        if score is not None and math.isfinite(score) and score > self.best[0]:
            self.best = (float(score), str(result.get("unit", trial.trial_id)))
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        self._refresh()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.failed.add(trial.trial_id)
        self._refresh()
