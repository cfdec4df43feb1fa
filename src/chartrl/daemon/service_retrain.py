"""The nightly retrain as the daemon runs it: ``chartrl retrain`` in a child process.

A child, so that its memory, GPU and crashes stay out of the trading process: same interpreter, same
config and command-line overrides, a lower priority (``--nice``), our data-dir lock inherited, the
OOM killer's first pick, its address space capped by ``daemon.retrain_memory_mb`` and its run by
``daemon.retrain_timeout``. The cycle itself is :mod:`chartrl.daemon.retrain`. A mixin of
:class:`chartrl.daemon.service.Daemon` (needs ``settings``, ``config_path``, ``cli_overrides``,
``_lock_fd`` and ``_retrain_proc``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from chartrl.daemon.lock import child_env
from chartrl.logs import get_logger

log = get_logger("chartrl.daemon")


def retrain_command(config: Path | None, overrides: Sequence[str] = ()) -> list[str]:
    """The child process that runs one retrain cycle: same interpreter, same config, and the same
    command-line ``overrides`` (``--data-dir X --symbol Y``) as the daemon, so it retrains that series."""
    cmd = [sys.executable, "-m", "chartrl"]
    if config is not None:
        cmd += ["--config", str(config)]
    return [*cmd, "retrain", "--nice", "10", *overrides]


def child_limits(memory_mb: int | None) -> Callable[[], None]:
    """Run in the retrain child before exec: the kernel's OOM killer picks it before the trading
    process, and its address space is capped when ``memory_mb`` is set."""

    def limit() -> None:
        import resource

        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("500")
        except OSError:
            pass  # not Linux, or no /proc: the limit below still holds
        if memory_mb is not None:
            cap = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return limit


class RetrainChild:
    """The retrain job; see the module docstring."""

    def _retrain_job(self) -> None:
        cmd = retrain_command(self.config_path, self.cli_overrides)
        log.info("retrain_started", command=" ".join(cmd))
        t0 = time.monotonic()
        try:
            # The child lowers its own priority (--nice): the trading process keeps the CPU.
            # The child works under our data-dir lock: it inherits the locked descriptor.
            fd = self._lock_fd
            proc = self._retrain_proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                pass_fds=(fd,) if fd is not None else (),
                env=child_env(fd) if fd is not None else None,
                preexec_fn=child_limits(self.settings.daemon.retrain_memory_mb),  # noqa: PLW1509
            )
            code = self._wait_retrain(proc, self.settings.daemon.retrain_timeout)
        except OSError as exc:
            log.error("retrain_not_started", error=str(exc))
            return
        finally:
            self._retrain_proc = None
        log.info("retrain_finished", exit_code=code, seconds=round(time.monotonic() - t0, 1))

    def _wait_retrain(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        """The child's exit code; past ``timeout`` it is stopped, so a hung retrain cannot block
        every later one (the job has max_instances=1)."""
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("retrain_timeout", seconds=timeout, action="stopping the retrain child")
            proc.terminate()
            try:
                return proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()
