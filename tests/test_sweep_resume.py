"""Resuming a sweep: SIGKILL of the driver half-way, then --resume, gives each unit once and
reruns no finished trial; an interrupted trial continues from its last finished epoch."""

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
from sweep_kit import CHART_TOML, SPEC_TOML, tiny_plan

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


@pytest.mark.slow
def test_sigkill_of_the_driver_then_resume_gives_8_rows_and_reruns_no_finished_trial(
    tmp_path,
) -> None:
    (tmp_path / "c.toml").write_text(CHART_TOML)
    (tmp_path / "spec.toml").write_text(SPEC_TOML)
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
            while len(_done(out)) < 2 and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            first.send_signal(signal.SIGKILL)
            first.wait()
        finished = _done(out)
        assert 2 <= len(finished) < 8, (tmp_path / "first.log").read_text()[-2000:]
        # SIGKILL leaves the embedded Ray's node agents behind: end them (by pid, ours only).
        time.sleep(1)
        _end(_pids_using(ray_tmp))
        second = subprocess.run(
            [*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=400
        )
        assert second.returncode == 0, second.stderr[-2000:]
        with (out / "results.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 8 and len({r["trial_id"] for r in rows}) == 8
        assert all(r["status"] == "done" for r in rows)
        for tid, body in finished.items():  # not run again: same result, one attempt
            assert (out / "trials" / tid / RESULT_FILE).read_text() == body
            assert attempts(out / "trials" / tid) == 1
        assert "8 of 8 trials done, 0 failed" in second.stdout
        time.sleep(1)
        assert _pids_using(ray_tmp) == []  # the resumed driver shut its Ray down
    finally:
        _end(_pids_using(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)


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
