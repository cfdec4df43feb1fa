import io
import json
import subprocess
import sys

from chartrl.config import load_settings
from chartrl.logs import configure_logging, get_logger

CLI = [sys.executable, "-m", "chartrl"]


def run(*args, env=None):
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith("CHARTRL")}
    e.update(env or {})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=e, timeout=120)


def test_config_check_bad_value_exit_2_one_line_per_problem_no_traceback():
    r = run("config", "check", env={"CHARTRL__MARKET__TIMEFRAME": "7x", "CHARTRL__TRADING__FEE": "-1"})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "market.timeframe = '7x'" in r.stderr and "trading.fee = -1" in r.stderr


def test_config_show_redacts_secret_and_check_ok():
    r = run("config", "show", env={"CHARTRL__EXCHANGE__API_KEY": "sup3rs3cretkey"})
    assert r.returncode == 0, r.stderr
    assert "sup3rs3cretkey" not in r.stdout and 'api_key = "***"' in r.stdout
    assert run("config", "check").returncode == 0


def test_usage_error_exit_2():
    r = run("no-such-command")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_configured_secret_never_reaches_logs():
    secret = "AbCdEf0123456789SECRET"
    load_settings(None, env={"CHARTRL__EXCHANGE__API_SECRET": secret})
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    log = get_logger("test")
    log.info("connect", url=f"https://x/api?signature={secret}&ts=1", detail=f"key was {secret}")
    log.info("headers", api_secret=secret, nested={"apiKey": "anything-here"})
    try:
        raise RuntimeError(f"request failed with secret={secret}")
    except RuntimeError:
        log.exception("boom")
    import logging

    logging.getLogger("ccxt.base.exchange").warning("stdlib says %s", secret)
    text = out.getvalue()
    assert secret not in text
    assert "anything-here" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["event"] == "connect" and "***" in lines[0]["url"]
    assert len(lines) == 4


def test_dates_are_iso_8601_only_and_utc():
    from datetime import UTC, datetime

    import pytest

    from chartrl.cli.app import parse_date
    from chartrl.errors import UsageError

    utc = UTC
    assert parse_date("2021-06-01", "--from") == datetime(2021, 6, 1, tzinfo=utc)
    assert parse_date("2021-06-01T12:00", "--from") == datetime(2021, 6, 1, 12, tzinfo=utc)
    assert parse_date("2021-06-01T12:00+05:00", "--from") == datetime(2021, 6, 1, 7, tzinfo=utc)
    for ambiguous in ("01/02/2020", "June 1 2021", "yesterday", "1577836800"):
        with pytest.raises(UsageError, match=f"--from '{ambiguous}' is not a date"):
            parse_date(ambiguous, "--from")
