"""``--search optuna``: Optuna behind Tune's OptunaSearch, its proposals written down in DIR so a
resumed sweep continues the very same study.

Why not Tune's own restore alone: Tune saves the searcher with its experiment state no more
often than every 10 s, so after a SIGKILL of the driver the state it restores can predate
configurations the killed driver had already proposed and started. Once Optuna's TPE is past its random
start-up, what it proposes next depends on which results had come in at that moment, a timing a
resumed sweep does not repeat. It would then train other configurations, and the started units
of the lost ones would linger in ``DIR/trials`` outside the study: extra rows in results.csv,
and a DSR trial count N above ``--trials``.

So every proposal is written, in order, to ``DIR/optuna-<strategy>.json`` before Tune sees it,
and a resumed search is a fresh study whose first proposals are the written ones (Optuna's
``enqueue_trial``), in the same order. Each of their units then reads its result back from its
trial directory (a finished one is not trained again), the study is told the same scores, and it
goes on from there until it holds ``--trials`` configurations.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from chartrl.atomic import atomic_write
from chartrl.errors import UsageError
from chartrl.experiments.params import config_id
from chartrl.experiments.plan import Plan
from chartrl.experiments.trainable import Unit, read_result, trial_dir

PROPOSALS_FILE = "optuna-{}.json"
_PREFIX = "params/"  # OptunaSearch flattens the param space {"strategy": s, "params": {...}}
MAX_ASKS = 200


def proposals_path(out: Path, strategy: str) -> Path:
    return Path(out) / PROPOSALS_FILE.format(strategy)


def read_proposals(path: Path) -> list[dict[str, Any]]:
    """The proposals written so far (Optuna's flat parameter names), oldest first."""
    try:
        return list(json.loads(Path(path).read_text())["proposals"])
    except FileNotFoundError:
        return []


class RecordedOptuna(OptunaSearch):
    """OptunaSearch that writes each new proposal to ``path`` and replays those already there."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._path = str(path)
        self._written = read_proposals(path)
        self._asked = 0

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id in self._ot_trials:
            return super().suggest(trial_id)
        if self._asked < len(self._written):
            # The next ask returns these values (Optuna samples nothing for them).
            self._ot_study.enqueue_trial(self._written[self._asked])
            config = super().suggest(trial_id)
        else:
            config = self._new_configuration(trial_id)
            self._written.append(dict(self._ot_trials[trial_id].params))
            body = json.dumps({"proposals": self._written}, indent=1) + "\n"
            atomic_write(Path(self._path), lambda fh: fh.write(body.encode()))
        self._asked += 1
        return config

    def _new_configuration(self, trial_id: str) -> dict | None:
        """Optuna's next proposal that the study does not hold yet. A repeat would train the same
        units again under the same trial ids (fewer configurations than --trials), and a resumed
        study's sampler does repeat: the enqueued proposals consumed none of its random draws, so
        its first draws are the killed study's first proposals. Each repeat is told to Optuna as
        failed (TPE leaves those out of its model and its start-up count) and it asks again: the
        next draw is the one the killed study would have made. Over a finite space (choices and
        integer ranges) TPE can keep proposing the few it likes; after MAX_ASKS repeats one of the
        configurations not yet held is drawn at random (seeded) and handed to Optuna instead."""
        held = {_key(p) for p in self._written}
        for _ in range(MAX_ASKS):
            config = super().suggest(trial_id)
            if _key(self._ot_trials[trial_id].params) not in held:
                return config
            self._ot_study.tell(self._ot_trials.pop(trial_id), state=TrialState.FAIL)
        rest = [p for p in _every_configuration(self._space) if _key(p) not in held]
        if not rest:
            raise UsageError(
                f"Optuna proposed only configurations already tried in {MAX_ASKS} asks: the "
                "--param space is exhausted; use a smaller --trials or --search grid"
            )
        self._ot_study.enqueue_trial(random.Random(len(held)).choice(rest))
        return super().suggest(trial_id)


def _every_configuration(space: dict[str, Any]) -> list[dict[str, Any]]:
    """Every point of a finite Optuna space (categorical and integer distributions), in Optuna's
    flat names; [] when a distribution is continuous."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    axes = []
    for d in space.values():
        if isinstance(d, CategoricalDistribution):
            axes.append(list(d.choices))
        elif isinstance(d, IntDistribution):
            axes.append(list(range(d.low, d.high + 1, d.step)))
        else:
            return []
    return [dict(zip(space, combo, strict=True)) for combo in itertools.product(*axes)]


def _key(flat: dict[str, Any]) -> str:
    """A proposal as its trial ids see it (config_id's rounding): equal keys, the same units."""
    return config_id("", {k.removeprefix(_PREFIX): v for k, v in flat.items()})


def searcher(plan: Plan, out: Path, strategy: str) -> Any:
    """The search algorithm of one strategy's experiment: Optuna (seeded), each configuration
    repeated once per seed and fold."""
    from ray.tune.search import Repeater

    repeat = len(plan.seeds) * len(plan.folds)
    alg = RecordedOptuna(proposals_path(out, strategy), metric="score", mode="max", seed=1)
    return Repeater(alg, repeat=repeat)


def study_done(plan: Plan, out: Path, strategy: str) -> bool:
    """True when the strategy's study holds ``--trials`` configurations and every unit of each
    is finished: a resume has nothing left to run there."""
    written = read_proposals(proposals_path(out, strategy))
    if len(written) < plan.trials:
        return False
    for flat in written:
        params = {k.removeprefix(_PREFIX): v for k, v in flat.items()}
        for seed in plan.seeds:
            for fold in range(len(plan.folds)):
                done = read_result(trial_dir(out, Unit(strategy, params, seed, fold)))
                if not done or done.get("status") != "done":
                    return False
    return True
