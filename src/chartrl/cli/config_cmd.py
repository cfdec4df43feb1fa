"""chartrl config show | check."""

from __future__ import annotations

import argparse

from chartrl.cli.app import settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show or check the effective configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    show = csub.add_parser(
        "show",
        help="print the effective configuration, secrets redacted",
        description="Print the settings in effect (defaults < --config/$CHARTRL_CONFIG file < CHARTRL__SECTION__KEY "
        "environment < command line) as TOML; secrets show as ***.",
    )
    show.set_defaults(func=_show)
    check = csub.add_parser(
        "check",
        help="validate the configuration (exit 2 with one line per problem)",
        description="Validate the effective configuration. Exit 0 when valid; exit 2 with one line per problem "
        "naming the setting, the value, what is allowed and the environment variable or option that set it.",
    )
    check.set_defaults(func=_check)


def _show(args: argparse.Namespace) -> None:
    from chartrl.config import show_settings

    print(show_settings(settings(args)), end="")


def _check(args: argparse.Namespace) -> None:
    from chartrl.config.loader import config_path
    from chartrl.daemon.checks import check_daemon_settings

    src = config_path(args.config)
    # What the daemon would refuse at start or on a reload is refused here too.
    check_daemon_settings(settings(args), source=str(src) if src else None)
    print(f"configuration OK ({src if src else 'built-in defaults'})")
