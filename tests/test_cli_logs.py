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
    r = run(
        "config", "check", env={"CHARTRL__MARKET__TIMEFRAME": "7x", "CHARTRL__TRADING__FEE": "-1"}
    )
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


def test_redaction_covers_bearer_tokens_access_keys_json_keys_and_pem():
    from chartrl.logs import _mask, _mask_text

    pem = (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretbody\n-----END RSA PRIVATE KEY-----"
    )
    texts = {
        "Authorization: Bearer eyJhbGciOi.payload.sig1": "eyJhbGciOi",
        '{"headers": {"Authorization": "Bearer tok-123456789"}}': "tok-123456789",
        "sent bearer abcdefghij12345 upstream": "abcdefghij12345",
        "GET /v1?access_key=AKIA1234567&x=1": "AKIA1234567",
        "credentials=alice:hunter22": "hunter22",
        '{"key": "k-98765432", "symbol": "BTC/USDT"}': "k-98765432",
        f"loaded {pem} from disk": "secretbody",
    }
    for text, secret in texts.items():
        masked = _mask_text(text)
        assert secret not in masked and "***" in masked, masked
    assert "BTC/USDT" in _mask_text('{"key": "x1234", "symbol": "BTC/USDT"}')
    masked = _mask(
        None,
        {
            "headers": {"Authorization": "Basic dXNlcjpwYXNz"},
            "key": "abc",
            "access_key": "def",
            "monkey": "ok",
        },
    )
    assert masked == {
        "headers": {"Authorization": "***"},
        "key": "***",
        "access_key": "***",
        "monkey": "ok",
    }


def _main(capsys, *args: str) -> tuple[int, str, str]:
    import pytest

    from chartrl.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out = capsys.readouterr()
    return int(exit_.value.code or 0), out.out, out.err


def test_global_options_are_accepted_after_the_command_too(tmp_path, capsys):
    code, _, err = _main(capsys, "data", "--log-level", "debug", "--log-format", "json")
    assert code == 0, err
    missing = tmp_path / "missing.toml"
    for argv in (
        ["config", "check", "--config", str(missing)],
        ["--config", str(missing), "config", "check"],
        ["config", "-c", str(missing), "check"],
    ):
        code, _, err = _main(capsys, *argv)
        assert code == 2 and f"config file {missing} does not exist" in err, argv
    good = tmp_path / "good.toml"
    good.write_text('[market]\ntimeframe = "4h"\n')
    code, out, _ = _main(
        capsys, "--config", str(missing), "config", "show", "--config", str(good)
    )  # the later one wins
    assert code == 0 and 'timeframe = "4h"' in out


def test_fetch_date_errors_name_the_spelling_used(capsys):
    for option in ("--from", "--since"):
        code, _, err = _main(capsys, "fetch", option, "2021-13-01", "--no-progress")
        assert code == 2 and err.startswith(f"error: {option} '2021-13-01' is not a date"), err


def test_an_unexpected_error_is_one_masked_line(capsys, monkeypatch):
    from chartrl.cli import data_cmd

    def boom(_args):
        raise RuntimeError(
            "GET https://x/api?signature=deadbeef1234 failed\n<html>\n<body>secret page</body>\n</html>"
        )

    monkeypatch.setattr(data_cmd, "_data", boom)
    code, _, err = _main(capsys, "data")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: unexpected RuntimeError: GET https://x/api?signature=*** failed")
    assert "deadbeef1234" not in err and "<html>" not in err
