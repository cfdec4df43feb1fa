"""The argument parser, the options every command shares, and command registration.

Each command module defines ``register(subparsers)`` that adds its parser and sets
``func=handler``; a handler takes the parsed ``argparse.Namespace`` and returns an exit code (or
None for 0). Heavy imports (torch, ccxt, matplotlib) happen inside handlers so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chartrl.config.settings import Settings
from chartrl.errors import UsageError

# Accepted before the command and after it (`chartrl data --log-level debug`, `chartrl config check -c F`).
_GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("-c", "--config"),
        {
            "type": Path,
            "help": "TOML config file (default: $CHARTRL_CONFIG, else built-in defaults)",
        },
    ),
    (
        ("--log-level",),
        {"choices": ["debug", "info", "warning", "error"], "help": "lowest level logged"},
    ),
    (
        ("--log-format",),
        {
            "choices": ["auto", "json", "console"],
            "help": "log format (auto: console in a terminal)",
        },
    ),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one usage line + the problem, exit 2 (argparse's own)
        self.print_usage()
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from chartrl import __version__
    from chartrl.cli import COMMAND_MODULES

    parser = _Parser(
        prog="chartrl", description="A Bitcoin trading daemon whose policy reads the chart."
    )
    parser.add_argument("--version", action="version", version=f"chartrl {__version__}")
    _add_global_options(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    for command_parser in _command_parsers(parser):
        # SUPPRESS: when not given after the command, the value given before it (or None) stays.
        _add_global_options(command_parser, default=argparse.SUPPRESS)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    group = parser.add_argument_group("global options")
    for flags, kwargs in _GLOBAL_OPTIONS:
        try:
            group.add_argument(*flags, default=default, **kwargs)
        except argparse.ArgumentError:  # the command defines this option itself: its own wins
            pass


def _command_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command and sub-command parser below ``parser`` (`config`, `config check`, ...)."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:  # argparse has no public accessor for its subparsers
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # an alias maps to the same parser
                found += [sub, *_command_parsers(sub)]
    return found


def add_series_options(parser: argparse.ArgumentParser, date_range: bool = True) -> None:
    """--exchange/--symbol/--timeframe/--data-dir (defaults from config) and --from/--until."""
    g = parser.add_argument_group("series")
    g.add_argument("--exchange", help="ccxt exchange id (default: config exchange.id)")
    g.add_argument(
        "--symbol",
        help="symbol such as BTC/USDT (default: config market.symbol); replaces market.symbols",
    )
    g.add_argument("--timeframe", help="timeframe such as 1h (default: config market.timeframe)")
    g.add_argument(
        "--data-dir",
        type=Path,
        help="data directory (default: $CHARTRL_DATA_DIR, else config data.dir)",
    )
    if date_range:
        g.add_argument(
            "--from",
            dest="date_from",
            metavar="DATE",
            help="first candle, UTC, ISO 8601: 2021-06-01 or 2021-06-01T12:00",
        )
        g.add_argument(
            "--until",
            dest="date_until",
            metavar="DATE",
            help="last candle (inclusive), UTC, ISO 8601",
        )


# The series options of add_series_options: (config section, key, argparse attribute).
SERIES_OPTIONS = (
    ("exchange", "id", "exchange"),
    ("market", "symbol", "symbol"),
    ("market", "timeframe", "timeframe"),
    ("data", "dir", "data_dir"),
)


def series_overrides(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """The series options given on the command line, as config overrides ({section: {key: value}})."""
    out: dict[str, dict[str, str]] = {}
    for section, key, attr in SERIES_OPTIONS:
        value = getattr(args, attr, None)
        if value is not None:
            out.setdefault(section, {})[key] = str(value)
    if "symbol" in out.get("market", {}):
        # --symbol means that one series: it replaces a configured market.symbols list.
        out["market"]["symbols"] = None
    return out


def series_flags(args: argparse.Namespace) -> list[str]:
    """The series options given on the command line, as options again (for a child chartrl)."""
    out: list[str] = []
    for _section, _key, attr in SERIES_OPTIONS:
        value = getattr(args, attr, None)
        if value is not None:
            out += [f"--{attr.replace('_', '-')}", str(value)]
    return out


def settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings for this command: defaults < file < environment < command-line; configures logging."""
    from chartrl.config import load_settings
    from chartrl.logs import configure_logging

    overrides = series_overrides(args)
    for section, values in extra.items():
        overrides.setdefault(section, {}).update(values)
    s = load_settings(args.config, overrides=overrides)
    configure_logging(args.log_level or s.log.level, args.log_format or s.log.format)
    return s


def parse_date(value: str | None, option: str) -> datetime | None:
    """A UTC datetime from ISO 8601: 2021-06-01, 2021-06-01T12:00, or with an offset (naive = UTC).

    Only ISO 8601: a free-form parser reads 01/02/2020 as 2 January, which a European user meant as
    1 February; for a trading range a wrong date must be refused, not guessed.
    """
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(
            f"{option} {value!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
        ) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def date_range(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    """--from/--until as UTC datetimes, refusing an empty range."""
    start = parse_date(getattr(args, "date_from", None), "--from")
    end = parse_date(getattr(args, "date_until", None), "--until")
    if start and end and end < start:
        raise UsageError(
            f"--until {end:%Y-%m-%d %H:%M} is before --from {start:%Y-%m-%d %H:%M}; the range is empty"
        )
    return start, end
