"""Exceptions named for what the operator must do.

Every error a user can cause or fix carries a one-line message that says what is wrong and what to
do. The CLI prints that line and exits with ``exit_code``; it never prints a traceback for these.
"""

from __future__ import annotations


class ChartrlError(Exception):
    """Base of every error the CLI reports as one line (exit code 1)."""

    exit_code = 1


class UsageError(ChartrlError):
    """Bad command-line arguments or options (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration is invalid; the message lists one line per problem (exit code 2)."""

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(
            f"invalid configuration{where}:\n" + "\n".join(f"  {p}" for p in self.problems)
        )


class DataError(ChartrlError):
    """Candles or a data file are unusable as they are (names the file, rows and rule)."""


class CheckpointError(ChartrlError):
    """A model checkpoint is missing, corrupt or does not match what was asked for."""


class TemporaryError(ChartrlError):
    """Something outside us failed for now (network, rate limit): retry later and keep running."""


class OperationalError(ChartrlError):
    """Trading must stop until the operator acts (bad keys, insufficient funds, ledger mismatch)."""


class TradingHalted(OperationalError):
    """A halt is recorded in the ledger: no order is sent until ``chartrl halt clear``. The daemon keeps
    running (fetching, deciding, holding) rather than exiting, so clearing the halt resumes it."""
