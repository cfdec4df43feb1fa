import os
import stat
import tomllib
from pathlib import Path

import pytest

from chartrl.config import Settings, load_settings, show_settings
from chartrl.errors import ConfigError
from conftest import REPO


def test_defaults_validate_and_example_file_matches_defaults():
    example = load_settings(REPO / "config" / "chartrl.toml", env={})
    assert example == Settings()
    assert example.trading.mode == "paper"


def test_upbit_example_is_krw():
    s = load_settings(REPO / "config" / "upbit-krw.toml", env={})
    assert s.exchange.id == "upbit" and s.market.symbol == "BTC/KRW"
    assert s.trading.initial_cash == 50_000_000


def test_env_overrides_nested_and_typed(tmp_path: Path):
    env = {
        "CHARTRL__MARKET__TIMEFRAME": "4h",
        "CHARTRL__CHART__MA_PERIODS": "[7, 30]",
        "CHARTRL__TRADING__FEE": "0.0005",
    }
    s = load_settings(None, env=env)
    assert s.market.timeframe == "4h"
    assert s.chart.ma_periods == (7, 30)
    assert s.trading.fee == 0.0005


def test_every_bad_value_reported_one_line_each(tmp_path: Path):
    f = tmp_path / "bad.toml"
    f.write_text(
        '[market]\ntimeframe = "7x"\n[trading]\nfee = -1\nmode = "yolo"\n[chart]\nwindow = 5\n[bogus]\nx = 1\n'
    )
    with pytest.raises(ConfigError) as e:
        load_settings(f, env={})
    lines = e.value.problems
    assert any(line.startswith("market.timeframe = '7x'") for line in lines)
    assert any(
        line.startswith("trading.fee = -1") and "greater than or equal to 0" in line
        for line in lines
    )
    assert any(
        line.startswith("trading.mode = 'yolo'") and "'paper' or 'live'" in line for line in lines
    )
    assert any(line.startswith("chart.window = 5") for line in lines)
    assert any(line.startswith("bogus: unknown setting") for line in lines)
    assert len(lines) == 5


def test_secret_in_toml_refused(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text('[exchange]\napi_key = "abc123456"\n')
    with pytest.raises(ConfigError, match="secrets never go in the config file"):
        load_settings(f, env={})


def test_key_file_must_be_private(tmp_path: Path):
    kf = tmp_path / "keys.toml"
    kf.write_text('api_key = "KEY-1234567"\napi_secret = "SECRET-7654321"\n')
    os.chmod(kf, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_settings(None, env={"CHARTRL__EXCHANGE__KEY_FILE": str(kf)})
    os.chmod(kf, stat.S_IRUSR | stat.S_IWUSR)
    s = load_settings(None, env={"CHARTRL__EXCHANGE__KEY_FILE": str(kf)})
    assert s.exchange.api_key.get_secret_value() == "KEY-1234567"
    shown = show_settings(s)
    assert (
        "KEY-1234567" not in shown and "SECRET-7654321" not in shown and 'api_key = "***"' in shown
    )
    tomllib.loads(shown)  # config show is valid TOML


def test_numeric_secret_from_env_stays_a_string():
    s = load_settings(None, env={"CHARTRL__EXCHANGE__API_KEY": "123456789"})
    assert s.exchange.api_key.get_secret_value() == "123456789"


def test_data_dir_precedence(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text(f'[data]\ndir = "{tmp_path / "from-file"}"\n')
    assert load_settings(f, env={}).data_dir == tmp_path / "from-file"
    env = {"CHARTRL_DATA_DIR": str(tmp_path / "from-env")}
    assert load_settings(f, env=env).data_dir == tmp_path / "from-env"
    cli = {"data": {"dir": str(tmp_path / "from-cli")}}
    assert load_settings(f, env=env, overrides=cli).data_dir == tmp_path / "from-cli"


def test_missing_and_invalid_toml_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[market\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, env={})


def test_bad_value_names_the_environment_variable_or_option_that_set_it(tmp_path: Path):
    f = tmp_path / "ok.toml"
    f.write_text('[market]\ntimeframe = "7x"\n')
    env = {"CHARTRL__RISK__MAX_DAILY_LOSS": "abc", "CHARTRL__RISK__MAX_DRAWDOWN": "0.2"}
    with pytest.raises(ConfigError) as e:
        load_settings(f, env=env, overrides={"market": {"symbol": "BTCUSDT"}})
    lines = e.value.problems
    assert any(
        line.startswith("risk.max_daily_loss = 'abc'")
        and line.endswith("(set by CHARTRL__RISK__MAX_DAILY_LOSS)")
        for line in lines
    )
    assert any(
        line.startswith("risk.max_drawdown: unknown setting (set by CHARTRL__RISK__MAX_DRAWDOWN)")
        for line in lines
    )
    assert any(
        line.startswith("market.symbol = 'BTCUSDT'") and line.endswith("(set by the command line)")
        for line in lines
    )
    assert any(
        line.startswith("market.timeframe = '7x'") and "set by" not in line for line in lines
    )  # from the file


@pytest.mark.parametrize("url", ["notaurl", "ftp://host", "http://", "http://127.0.0.1:port"])
def test_api_url_must_be_http(url: str):
    with pytest.raises(ConfigError, match=r"exchange.api_url = .*must be an http\(s\) URL"):
        load_settings(None, env={"CHARTRL__EXCHANGE__API_URL": url})
    assert load_settings(
        None, env={"CHARTRL__EXCHANGE__API_URL": "http://127.0.0.1:8765"}
    ).exchange.api_url


def test_market_since_must_be_an_iso_date():
    with pytest.raises(ConfigError, match="market.since = 'yesterday': must be an ISO date"):
        load_settings(None, env={"CHARTRL__MARKET__SINCE": "yesterday"})


def test_key_file_that_is_a_directory_is_a_config_error(tmp_path: Path):
    d = tmp_path / "keys"
    d.mkdir(mode=0o700)
    with pytest.raises(
        ConfigError, match=r"exchange.key_file = .*keys': cannot read it \(Is a directory\)"
    ):
        load_settings(None, env={"CHARTRL__EXCHANGE__KEY_FILE": str(d)})


def test_market_since_accepts_an_unquoted_toml_date(tmp_path: Path):
    assert (
        load_settings(None, env={"CHARTRL__MARKET__SINCE": "2018-01-01"}).market.since
        == "2018-01-01"
    )
    f = tmp_path / "c.toml"
    f.write_text("[market]\nsince = 2018-01-01\n")
    assert load_settings(f, env={}).market.since == "2018-01-01"
    f.write_text("[market]\nsince = 2018-01-01T06:00:00Z\n")
    assert load_settings(f, env={}).market.since == "2018-01-01T06:00:00+00:00"


def test_a_date_where_text_is_expected_is_shown_as_written(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text("[market]\ntimeframe = 2018-01-01\n")
    with pytest.raises(ConfigError) as e:
        load_settings(f, env={})
    assert e.value.problems[0].startswith(
        "market.timeframe = 2018-01-01: "
    ) and "datetime" not in str(e.value)
