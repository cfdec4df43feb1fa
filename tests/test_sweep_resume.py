"""Resuming a sweep: SIGKILL of the driver half-way, then --resume, gives each unit once and
reruns no finished trial (grid, and Optuna, whose resumed study proposes what the killed one had
proposed); an interrupted trial continues from its last finished epoch."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from chartrl.experiments.trainable import RESULT_FILE, Unit, attempts, run_unit, trial_dir
from sweep_kit import CHART_TOML, OPTUNA_SPEC_TOML, SPEC_TOML, tiny_plan

REPO = Path(__file__).resolve().parents[1]


def _pids_using(root: Path) -> list[int]:
    """Processes with a file, their cwd or their command line under ``root`` (a Ray temp dir of
    this test's own): the Ray processes of the drivers this test started, and only those."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
            links.append(os.readlink(proc / "cwd"))
            links.append((proc / "cmdline").read_bytes().decode(errors="replace"))
        except OSError:
            continue
        if any(str(root) in link for link in links):
            found.append(int(proc.name))
    return found


def _end(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _done(out: Path) -> dict[str, str]:
    found = {}
    for p in (out / "trials").glob(f"*/{RESULT_FILE}"):
        body = p.read_text()
        if json.loads(body).get("status") == "done":
            found[p.parent.name] = body
    return found


def _statuses(rows: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    return [(r["trial_id"], r["status"], r.get("error", "")) for r in rows]


def _kill_then_resume(tmp_path: Path, spec: str, kill_after: int, units: int):
    """Start `chartrl sweep --spec` in a driver process, SIGKILL it once ``kill_after`` units
    are done, then `--resume` it to the end: (the results.csv rows, the finished units' result
    files before the kill, the resumed driver's stdout)."""
    (tmp_path / "c.toml").write_text(CHART_TOML)
    (tmp_path / "spec.toml").write_text(spec)
    out = tmp_path / "sweep"
    # A Ray temp dir of this test's own (short: Ray's socket paths have a length limit), so its
    # processes can be told from any other session's.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO / "src")}
    driver = "from chartrl.cli import main\nimport sys\nmain(sys.argv[1:])\n"
    cmd = [sys.executable, "-c", driver, "-c", str(tmp_path / "c.toml"), "--log-level", "warning"]
    cmd += ["sweep", "--no-progress", "--out", str(out)]
    try:
        with (tmp_path / "first.log").open("w") as log:
            first = subprocess.Popen(
                [*cmd, "--spec", str(tmp_path / "spec.toml")], env=env, stdout=log, stderr=log
            )
            deadline = time.monotonic() + 300
            while (
                len(_done(out)) < kill_after
                and first.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.5)
            first.send_signal(signal.SIGKILL)
            first.wait()
        finished = _done(out)
        assert kill_after <= len(finished) < units, (tmp_path / "first.log").read_text()[-2000:]
        # SIGKILL leaves the embedded Ray's node agents behind: end them (by pid, ours only).
        time.sleep(1)
        _end(_pids_using(ray_tmp))
        second = subprocess.run(
            [*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=400
        )
        assert second.returncode == 0, second.stderr[-2000:]
        with (out / "results.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        for tid, body in finished.items():  # not run again: same result, one attempt
            assert (out / "trials" / tid / RESULT_FILE).read_text() == body
            assert attempts(out / "trials" / tid) == 1
        time.sleep(1)
        assert _pids_using(ray_tmp) == []  # the resumed driver shut its Ray down
        return rows, finished, second.stdout
    finally:
        _end(_pids_using(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_sigkill_of_the_driver_then_resume_gives_8_rows_and_reruns_no_finished_trial(
    tmp_path,
) -> None:
    rows, _, stdout = _kill_then_resume(tmp_path, SPEC_TOML, kill_after=2, units=8)
    assert len(rows) == 8 and len({r["trial_id"] for r in rows}) == 8
    assert all(r["status"] == "done" for r in rows), _statuses(rows)
    assert "8 of 8 trials done, 0 failed" in stdout


@pytest.mark.slow
def test_sigkill_then_resume_of_an_optuna_search_continues_the_same_study(tmp_path) -> None:
    """3 configurations x 2 seeds, killed after the first configuration's pair and one unit of
    the next: the resumed study proposes the configurations the killed one had started (their
    finished units are kept, not retrained) and no more, 6 rows in all."""
    rows, finished, stdout = _kill_then_resume(tmp_path, OPTUNA_SPEC_TOML, kill_after=3, units=6)
    assert len(rows) == 6 and len({r["trial_id"] for r in rows}) == 6, [r["trial_id"] for r in rows]
    assert all(r["status"] == "done" for r in rows), _statuses(rows)
    configs = {r["config_id"] for r in rows}
    assert len(configs) == 3
    for c in configs:
        assert sorted(r["seed"] for r in rows if r["config_id"] == c) == ["1", "2"]
    assert set(finished) <= {r["trial_id"] for r in rows}
    assert "6 of 6 trials done, 0 failed" in stdout
    from chartrl.experiments.search import proposals_path, read_proposals

    written = read_proposals(proposals_path(tmp_path / "sweep", "cnn"))
    rates = {json.loads(r["params"])["learning_rate"] for r in rows}
    assert [p["params/learning_rate"] for p in written] and rates == {
        p["params/learning_rate"] for p in written
    }


def _history(path: Path) -> list[dict[str, str]]:
    with (path / "history.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_an_interrupted_trial_continues_from_its_last_epoch(tmp_path) -> None:
    """The trainer's model directory is the trial's checkpoint: a unit stopped after its
    imitation epoch (here: a run that planned no DQN epoch, its result removed as if it had
    never ended) continues with DQN, and the imitation epoch is not trained again."""
    plan, candles = tiny_plan(folds=1, strategies=["cnn"], seeds=[1])
    unit = Unit("cnn", {}, 1, 0)
    path = trial_dir(tmp_path, unit)
    run_unit(unit, replace(plan, train={**plan.train, "epochs": 0}), candles, tmp_path)
    before = _history(path)
    assert [(r["stage"], r["epoch"]) for r in before] == [("imitation", "1")]
    (path / RESULT_FILE).unlink()
    row = run_unit(unit, plan, candles, tmp_path)
    after = _history(path)
    # the same imitation row, timings and all (not retrained), then the DQN epoch
    assert {k: after[0][k] for k in before[0]} == before[0]
    assert [(r["stage"], r["kind"]) for r in after[1:]][-1] == ("dqn", "epoch")
    assert row["status"] == "done" and row["attempts"] == 2
    assert run_unit(unit, plan, candles, tmp_path) == row  # done: returned, not run again
    assert attempts(path) == 2


def _propose(alg, n: int, lag: int) -> list[float]:
    """``n`` proposals of ``alg`` over a learning-rate range, each result told ``lag`` proposals
    after it was made (how many were still training when the next one was asked for)."""
    import math

    from ray import tune

    alg.set_search_properties(
        None, None, {"strategy": "cnn", "params": {"learning_rate": tune.loguniform(1e-4, 1e-3)}}
    )
    rates: list[float] = []
    for i in range(n):
        rates.append(alg.suggest(f"t{i}")["params"]["learning_rate"])
        if i >= lag:
            score = -abs(math.log(rates[i - lag] / 3e-4))
            alg.on_trial_complete(f"t{i - lag}", {"score": score})
    return rates


def test_a_resumed_optuna_study_proposes_first_what_the_killed_one_had_proposed(tmp_path) -> None:
    """Past Optuna's 10 random start-up proposals, what TPE proposes depends on the results in
    by then: a resumed driver, whose trials finish at other moments, would propose other
    configurations than the killed one had started. The written proposals come first instead."""
    from ray.tune.search.optuna import OptunaSearch

    from chartrl.experiments.search import RecordedOptuna, proposals_path, read_proposals

    path = proposals_path(tmp_path, "cnn")
    first = _propose(RecordedOptuna(path, metric="score", mode="max", seed=1), 14, lag=0)
    # the control: the same seed with results in later proposes otherwise (the test has teeth)
    plain = _propose(OptunaSearch(metric="score", mode="max", seed=1), 14, lag=3)
    assert plain[:10] == first[:10] and plain[10:] != first[10:]
    resumed = _propose(RecordedOptuna(path, metric="score", mode="max", seed=1), 16, lag=3)
    assert resumed[:14] == first
    written = [p["params/learning_rate"] for p in read_proposals(path)]
    assert written == resumed and len(set(written)) == 16


def test_a_resumed_study_proposes_no_configuration_twice(tmp_path) -> None:
    """Killed after 2 of its start-up (random) proposals: the resumed study, whose sampler
    starts its random draws afresh, goes on with the 3rd and 4th draws an uninterrupted study
    makes, not with the 1st and 2nd again (the same units under the same trial ids: a sweep of
    fewer configurations than --trials)."""
    from chartrl.experiments.search import RecordedOptuna, proposals_path

    def study(path: Path, n: int) -> list[float]:
        return _propose(RecordedOptuna(path, metric="score", mode="max", seed=1), n, lag=0)

    killed = study(proposals_path(tmp_path / "a", "cnn"), 2)
    whole = study(proposals_path(tmp_path / "b", "cnn"), 4)
    resumed = study(proposals_path(tmp_path / "a", "cnn"), 4)
    assert whole[:2] == killed and len(set(whole)) == 4
    assert resumed == whole


def test_a_search_as_large_as_its_finite_space_proposes_each_configuration_once(
    tmp_path,
) -> None:
    """20 configurations (2 norms x frame stacks 1..10), --trials 20: past its random start-up
    TPE keeps proposing the ones it likes; the search still ends with all 20, each once."""
    from ray import tune

    from chartrl.experiments.search import RecordedOptuna, proposals_path

    alg = RecordedOptuna(proposals_path(tmp_path, "cnn"), metric="score", mode="max", seed=1)
    space = {"norm": tune.choice(["group", "layer"]), "frame_stack": tune.randint(1, 11)}
    alg.set_search_properties(None, None, {"strategy": "cnn", "params": space})
    got = []
    for i in range(20):
        config = alg.suggest(f"t{i}")["params"]
        got.append((config["norm"], config["frame_stack"]))
        alg.on_trial_complete(f"t{i}", {"score": float(config["frame_stack"])})
    assert sorted(got) == [(n, k) for n in ("group", "layer") for k in range(1, 11)]


def test_a_study_whose_proposals_are_all_finished_is_not_run_again(tmp_path) -> None:
    from chartrl.experiments.search import proposals_path, study_done

    plan, _ = tiny_plan(folds=1, strategies=["cnn"], search="optuna", trials=2)
    rates = [2e-4, 5e-4]
    path = proposals_path(tmp_path, "cnn")
    path.write_text(json.dumps({"proposals": [{"params/learning_rate": rates[0]}]}))
    units = [Unit("cnn", {"learning_rate": lr}, seed, 0) for lr in rates for seed in (1, 2)]
    for u in units:
        trial_dir(tmp_path, u).mkdir(parents=True)
        (trial_dir(tmp_path, u) / RESULT_FILE).write_text(json.dumps({"status": "done"}))
    assert not study_done(plan, tmp_path, "cnn")  # 1 of --trials 2 proposed so far
    path.write_text(json.dumps({"proposals": [{"params/learning_rate": lr} for lr in rates]}))
    assert study_done(plan, tmp_path, "cnn")
    (trial_dir(tmp_path, units[3]) / RESULT_FILE).write_text(json.dumps({"status": "failed"}))
    assert not study_done(plan, tmp_path, "cnn")  # a failed unit gets another round
