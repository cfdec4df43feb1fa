"""systemd integration: the unit files and the hand-written sd_notify protocol."""

from __future__ import annotations

import configparser
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from chartrl.daemon.sdnotify import Notifier, heartbeat_interval

REPO = Path(__file__).resolve().parents[1]
SYSTEM_UNIT = REPO / "systemd" / "chartrl.service"
USER_UNIT = REPO / "systemd" / "chartrl-user.service"


def _unit(path: Path) -> configparser.ConfigParser:
    # systemd allows repeated keys (Environment=); strict=False keeps the last, enough for these checks.
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # keys are case-sensitive
    cp.read_string(path.read_text())
    return cp


def test_system_unit_has_the_required_settings():
    svc = _unit(SYSTEM_UNIT)["Service"]
    unit = _unit(SYSTEM_UNIT)["Unit"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert int(svc["WatchdogSec"]) > 0 and svc["Restart"] == "on-failure"
    assert int(unit["StartLimitIntervalSec"]) > 0 and int(unit["StartLimitBurst"]) > 0
    assert svc["User"] == "chartrl"
    assert svc["EnvironmentFile"] == "-/etc/chartrl/keys.env"
    assert svc["ProtectSystem"] == "strict" and svc["ReadWritePaths"] == "/var/lib/chartrl"
    assert svc["StateDirectory"] == "chartrl"
    for key in (
        "NoNewPrivileges",
        "PrivateTmp",
        "ProtectHome",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
    ):
        assert svc[key] == "yes", key
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert svc["SystemCallFilter"] == "@system-service"
    # Left out on purpose (PyTorch JIT needs writable+executable memory); the file says why.
    assert "MemoryDenyWriteExecute" not in svc
    assert "MemoryDenyWriteExecute=yes is deliberately absent" in SYSTEM_UNIT.read_text()
    assert " run" in svc["ExecStart"] and "--live" not in svc["ExecStart"]


def test_user_unit_is_a_notify_service_with_a_watchdog():
    svc = _unit(USER_UNIT)["Service"]
    assert (
        svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0 and svc["Restart"] == "on-failure"
    )
    assert svc["EnvironmentFile"].startswith("-%h/")
    assert "User" not in svc  # a user manager cannot switch users
    assert _unit(USER_UNIT)["Install"]["WantedBy"] == "default.target"


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_start_up_retries_end_before_systemd_gives_up_on_the_start(unit: Path):
    """A daemon still retrying when TimeoutStartSec expires is killed mid-retry and counted as a failed
    start; it must give up first, with room for its last attempt and the model load."""
    from chartrl.daemon.service import START_RETRY_SECONDS

    assert START_RETRY_SECONDS + 60 <= int(_unit(unit)["Service"]["TimeoutStartSec"])


def _verify(
    unit: Path, tmp_path: Path, exec_path: str, user: bool
) -> subprocess.CompletedProcess[str]:
    # verify checks that ExecStart exists; point it at a binary this machine has.
    text = unit.read_text().replace(exec_path, shutil.which("true") or "/bin/true")
    copy = tmp_path / unit.name
    copy.write_text(text)
    env = dict(os.environ)
    args = ["systemd-analyze"]
    if user:
        (tmp_path / "rt").mkdir()
        env["XDG_RUNTIME_DIR"] = str(tmp_path / "rt")
        args.append("--user")
    return subprocess.run(
        [*args, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("unit", "exec_path", "user"),
    [
        (SYSTEM_UNIT, "/opt/chartrl/.venv/bin/chartrl", False),
        (USER_UNIT, "%h/chartrl/.venv/bin/chartrl", True),
    ],
)
def test_systemd_analyze_verify_accepts_the_unit(
    unit: Path, exec_path: str, user: bool, tmp_path: Path
):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    proc = _verify(unit, tmp_path, exec_path, user)
    if proc.returncode != 0 and "Failed to initialize manager" in proc.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {proc.stderr.strip()}")
    # verify exits 0 on ignored lines too, so any complaint about our file counts as a failure.
    complaints = [line for line in proc.stderr.splitlines() if unit.name in line]
    assert proc.returncode == 0 and not complaints, proc.stderr


def test_verify_check_would_catch_a_typo(tmp_path: Path):
    """The check above can fail: a misspelt directive produces a complaint naming the file."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    broken = tmp_path / "src" / "chartrl.service"
    broken.parent.mkdir()
    broken.write_text(SYSTEM_UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    proc = _verify(broken, tmp_path, "/opt/chartrl/.venv/bin/chartrl", False)
    if "Failed to initialize manager" in proc.stderr:
        pytest.skip("systemd-analyze cannot run here")
    assert any("WatchdogSecs" in line for line in proc.stderr.splitlines())


# ---------------------------------------------------------------------------- sd_notify


@pytest.fixture
def notify_socket(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def test_notifier_sends_ready_status_watchdog_stopping(notify_socket):
    sock, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("paper BTC/USDT flat")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=paper BTC/USDT flat"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    n.status("line one\nline two")  # a newline would start a bogus assignment
    assert sock.recv(4096) == b"STATUS=line one line two"
    n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    n.close()


def test_notifier_abstract_namespace_socket():
    name = f"chartrl-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_notifier_is_a_noop_without_systemd():
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False


def test_notifier_survives_a_vanished_socket(tmp_path: Path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.watchdog() is False  # logged once, no exception: trading goes on


def test_heartbeat_is_half_the_watchdog_at_most():
    pid = str(os.getpid())
    n = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid})
    assert heartbeat_interval(n, 60.0) == 15.0
    assert heartbeat_interval(n, 10.0) == 10.0
    other = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert heartbeat_interval(other, 60.0) == 60.0  # the watchdog is meant for another process
    assert heartbeat_interval(Notifier({}), 10.0) == 10.0
