"""Fetching through real ccxt against the loopback exchange emulator (never the network)."""

from __future__ import annotations

from pathlib import Path

import ccxt
import numpy as np
import pandas as pd
import pytest

from chartrl.config import load_settings
from chartrl.errors import DataError, OperationalError, TemporaryError, UsageError
from chartrl.market.candles import to_ms
from chartrl.market.exchange import call_with_retry, make_exchange
from chartrl.market.fetch import update_series
from chartrl.market.store import CandleStore
from chartrl.testing.exchange_sim import ExchangeSim, SimClock
from chartrl.testing.synthetic import synthetic_candles

HOUR = 3_600_000
SERIES = ("binance", "BTC/USDT", "1h")


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return synthetic_candles(2500, seed=5, start="2020-01-01")


@pytest.fixture
def restore_logging():
    """The CLI configures logging onto capsys's stream; put the defaults back afterwards."""
    import logging

    import structlog

    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


def _settings(sim: ExchangeSim, tmp_path: Path, **exchange):
    return load_settings(
        None,
        env={},
        overrides={
            "exchange": {
                "api_url": sim.url,
                # Long enough for an answer on a loaded machine (at 400 ms one page was asked
                # twice when CI ran beside a training), short against the injected 3 s stall.
                "timeout_ms": 1500,
                "retry_base_delay": 0.01,
                **exchange,
            },
            "market": {"since": "2019-12-01"},
            "data": {"dir": str(tmp_path / "data")},
        },
    )


def _klines(sim: ExchangeSim) -> list[dict[str, str]]:
    return [q for _, path, q in sim.requests if path == "/api/v3/klines"]


def _open_ms(df: pd.DataFrame, i: int) -> int:
    return int(to_ms(df["timestamp"].iloc[i]))


def _assert_same(stored: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_series_equal(
        stored["timestamp"], expected["timestamp"].reset_index(drop=True)
    )
    cols = ["open", "high", "low", "close", "volume"]
    assert np.allclose(stored[cols].to_numpy(), expected[cols].to_numpy(), rtol=1e-7)


def test_full_history_paginated_and_open_candle_dropped(history, tmp_path):
    with ExchangeSim(history) as sim:  # clock: 1 s after the last candle opened -> it is still open
        s = _settings(sim, tmp_path)
        summary = update_series(s, progress=False)
        pages = _klines(sim)
    assert summary.added == len(history) - 1 == summary.count
    _assert_same(CandleStore(s.data_dir).load(*SERIES), history.iloc[:-1])
    assert len(pages) == 3 and all(q["limit"] == "1000" for q in pages)
    # from market.since (before the first candle), then one candle after the previous page's last
    since = int(pd.Timestamp("2019-12-01", tz="UTC").value // 1_000_000)
    assert [int(q["startTime"]) for q in pages] == [
        since,
        _open_ms(history, 1000),
        _open_ms(history, 2000),
    ]


def test_incremental_run_requests_only_new_candles(history, tmp_path):
    clock = SimClock(_open_ms(history, 2000) + 1000)  # candle 2000 is open
    with ExchangeSim(history, clock=clock) as sim:
        s = _settings(sim, tmp_path)
        ex = make_exchange(s.exchange)
        first = update_series(s, progress=False, exchange=ex)
        assert first.count == 2000 and first.last == history["timestamp"].iloc[1999]
        sim.requests.clear()
        clock.advance(3 * HOUR)  # candles 2000-2002 close, 2003 opens
        second = update_series(s, progress=False, exchange=ex)
        assert second.added == 3 and second.count == 2003
        pages = _klines(sim)
        assert len(pages) == 1 and int(pages[0]["startTime"]) == _open_ms(history, 2000)
        assert [p for _, p, _ in sim.requests] == [
            "/api/v3/time",
            "/api/v3/klines",
        ]  # markets stay loaded
        sim.requests.clear()
        third = update_series(
            s, progress=False, exchange=ex
        )  # nothing closed since: no klines at all
        assert third.added == 0 and _klines(sim) == []
    _assert_same(CandleStore(s.data_dir).load(*SERIES), history.iloc[:2003])


def test_still_open_candle_mid_candle_not_stored_and_until_respected(history, tmp_path):
    clock = SimClock(_open_ms(history, 100) + 40 * 60_000)  # 40 minutes into candle 100
    with ExchangeSim(history, clock=clock) as sim:
        s = _settings(sim, tmp_path)
        summary = update_series(s, progress=False)
        assert summary.last == history["timestamp"].iloc[99]
        store = CandleStore(s.data_dir)
        assert store.last_timestamp(*SERIES) + pd.Timedelta(hours=1) <= pd.Timestamp(
            clock.now_ms(), unit="ms", tz="UTC"
        )
        clock.advance(50 * HOUR)
        until = history["timestamp"].iloc[120]
        update_series(s, until=until, progress=False)
        assert store.last_timestamp(*SERIES) == until


def test_fetched_candles_are_validated_strict_refuses(history, tmp_path):
    bad = history.iloc[:300].copy()
    bad.loc[150, "high"] *= 5  # a bad print on the exchange
    with ExchangeSim(bad) as sim:
        s = _settings(sim, tmp_path)
        strict = s.model_copy(update={"data": s.data.model_copy(update={"strict": True})})
        with pytest.raises(DataError, match="price_spike 1"):
            update_series(strict, progress=False)
        assert not CandleStore(s.data_dir).path(*SERIES).exists()
        summary = update_series(s, progress=False)
    assert summary.report.counts() == {"price_spike": 1}
    assert summary.count == 298 and (summary.gaps.count, summary.gaps.missing) == (1, 1)


@pytest.mark.parametrize("kind", ["429", "503", "500", "timeout", "reset"])
def test_retries_transient_faults(history, tmp_path, kind):
    clock = SimClock(_open_ms(history, 300) + 1000)
    with ExchangeSim(history, clock=clock) as sim:
        s = _settings(sim, tmp_path)
        sim.faults.add(
            "/api/v3/klines", kind, count=2, ms=3000 if kind == "timeout" else None, retry_after=0
        )
        summary = update_series(s, progress=False)
        assert summary.count == 300
        starts = [q["startTime"] for q in _klines(sim)]
        assert starts == [starts[0]] * 3  # the same page asked three times: two faults, one answer
        assert len(sim.faults.injected) == 2


def test_retries_exhausted_is_a_one_line_temporary_error(history, tmp_path):
    clock = SimClock(_open_ms(history, 300) + 1000)
    with ExchangeSim(history, clock=clock) as sim:
        s = _settings(sim, tmp_path, max_retries=2)
        sim.faults.add("/api/v3/klines", "429", count=None, retry_after=0)
        with pytest.raises(TemporaryError) as exc:
            update_series(s, progress=False)
        assert len(_klines(sim)) == 3
    msg = str(exc.value)
    assert (
        "after 3 attempts" in msg
        and ("DDoSProtection" in msg or "RateLimitExceeded" in msg)
        and "\n" not in msg
    )
    assert not CandleStore(s.data_dir).path(*SERIES).exists()


def test_unknown_symbol_lists_close_matches(history, tmp_path):
    with ExchangeSim(history) as sim:
        s = _settings(sim, tmp_path).model_copy(
            update={
                "market": _settings(sim, tmp_path).market.model_copy(update={"symbol": "BTC/USDX"})
            }
        )
        with pytest.raises(UsageError) as exc:
            update_series(s, progress=False)
        assert _klines(sim) == []
    assert "BTC/USDX" in str(exc.value) and "close matches: BTC/USDT" in str(exc.value)


def test_auth_and_bad_symbol_are_not_retried_and_secrets_masked():
    calls = []

    def auth_fail():
        calls.append(1)
        raise ccxt.AuthenticationError(
            'binance {"code":-2015,"msg":"Invalid API-key"} apiKey=Sup3rSecretValue'
        )

    with pytest.raises(OperationalError) as exc:
        call_with_retry(auth_fail, max_retries=5, base_delay=0, sleep=lambda _: None)
    assert (
        len(calls) == 1 and "Sup3rSecretValue" not in str(exc.value) and "API key" in str(exc.value)
    )

    def bad_symbol():
        calls.append(2)
        raise ccxt.BadSymbol("binance does not have market symbol FOO/BAR")

    with pytest.raises(UsageError):
        call_with_retry(bad_symbol, max_retries=5, base_delay=0, sleep=lambda _: None)
    assert calls == [1, 2]


def test_backoff_is_exponential_with_jitter():
    delays: list[float] = []
    attempts = iter(
        [
            ccxt.RequestTimeout("t"),
            ccxt.DDoSProtection("d"),
            ccxt.RateLimitExceeded("r"),
            ccxt.ExchangeNotAvailable("x"),
        ]
    )

    def flaky():
        err = next(attempts, None)
        if err:
            raise err
        return "ok"

    assert call_with_retry(flaky, max_retries=4, base_delay=1.0, sleep=delays.append) == "ok"
    assert len(delays) == 4
    for k, d in enumerate(delays):
        assert 0.5 * 2**k <= d <= 1.5 * 2**k
    assert len(set(delays)) == 4


def test_retry_after_header_is_honoured():
    class Ex:
        last_response_headers = {"Retry-After": "7"}

        def fetch(self):
            if not delays:
                raise ccxt.RateLimitExceeded("429")
            return "ok"

    delays: list[float] = []
    assert call_with_retry(Ex().fetch, max_retries=3, base_delay=0.01, sleep=delays.append) == "ok"
    assert delays[0] >= 7


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from chartrl.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out = capsys.readouterr()
    return int(exit_.value.code or 0), out.out, out.err


def test_cli_fetch_twice(history, tmp_path, monkeypatch, capsys, restore_logging):
    clock = SimClock(_open_ms(history, 500) + 1000)
    with ExchangeSim(history, clock=clock) as sim:
        monkeypatch.setenv("CHARTRL__EXCHANGE__API_URL", sim.url)
        code, out, err = _cli(capsys, "fetch", "--since", "2020-01-01", "--no-progress")
        assert code == 0, err
        assert "binance BTC/USDT 1h: 500 new candles" in out
        clock.advance(2 * HOUR)
        code, out, err = _cli(capsys, "fetch", "--no-progress")
        assert code == 0, err
        assert "2 new candles" in out and "stored 502" in out
        code, out, err = _cli(capsys, "fetch", "--symbol", "ETH/USDT", "--no-progress")
        assert (
            code == 2
            and err.startswith("error: ")
            and err.count("\n") == 1
            and "Traceback" not in err
        )
        code, out, err = _cli(capsys, "data")
        assert code == 0 and "502" in out and "source ccxt:binance: 2 merges" in out


def test_refused_requests_are_one_line_errors_not_retried():
    calls = []

    def bad_interval():
        calls.append(1)
        raise ccxt.BadRequest('binance {"code":-1120,"msg":"Invalid interval."}')

    with pytest.raises(UsageError, match="refused as a bad request.*Invalid interval.*--timeframe"):
        call_with_retry(
            bad_interval, max_retries=5, base_delay=0, sleep=lambda _: None, what="fetch_ohlcv"
        )

    def odd_error():
        calls.append(2)
        raise ccxt.ExchangeError("binance something unexpected")

    with pytest.raises(TemporaryError, match="fetch_ohlcv failed: ExchangeError"):
        call_with_retry(
            odd_error, max_retries=5, base_delay=0, sleep=lambda _: None, what="fetch_ohlcv"
        )
    assert calls == [1, 2]


def test_since_after_the_newest_closed_candle_is_refused(history, tmp_path):
    clock = SimClock(_open_ms(history, 100) + 1000)
    with ExchangeSim(history, clock=clock) as sim:
        s = _settings(sim, tmp_path)
        with pytest.raises(
            UsageError, match=r"--since .* is after the newest closed BTC/USDT 1h candle"
        ):
            update_series(s, since=history["timestamp"].iloc[150], progress=False)
        assert _klines(sim) == []


def test_genuine_crash_is_stored_tick_by_tick(history, tmp_path):
    crash = history.iloc[:400].copy()
    prices = ["open", "high", "low", "close"]
    crash.loc[300:, prices] = crash.loc[300:, prices] / 4  # a real 75% crash at 300 that lasts
    crash.loc[300, ["open", "high"]] = crash.loc[299, "close"]
    clock = SimClock(_open_ms(crash, 300) + 1000)  # 0-299 closed; the crash candle is open
    with ExchangeSim(crash, clock=clock) as sim:
        s = _settings(sim, tmp_path)
        ex = make_exchange(s.exchange)
        assert update_series(s, progress=False, exchange=ex).count == 300
        for _ in range(
            2
        ):  # each tick stores the candle that just closed: the crash, then the next one
            clock.advance(HOUR)
            summary = update_series(s, progress=False, exchange=ex)
            assert summary.added == 1 and summary.report.repairs == {}, summary.report.describe()
    _assert_same(CandleStore(s.data_dir).load(*SERIES), crash.iloc[:302])


class _WindowPagedExchange:
    """A ccxt-like exchange that pages by time window ([since, since + limit candles)), as some do."""

    id = "fakex"
    has: dict[str, bool] = {}
    timeframes = {"1h": "1h"}
    features = {"spot": {"fetchOHLCV": {"limit": 10}}}
    urls = {"api": {"public": "http://127.0.0.1:9/api/v3", "private": "http://127.0.0.1:9/private"}}

    def __init__(self, candles: pd.DataFrame, markets: dict | None = None) -> None:
        self.rows = [
            [int(to_ms(r.timestamp)), r.open, r.high, r.low, r.close, r.volume]
            for r in candles.itertuples(index=False)
        ]
        self.markets = {"BTC/USDT": {"symbol": "BTC/USDT"}} if markets is None else markets
        self.since: list[int] = []

    def load_markets(self) -> dict:
        return self.markets

    def fetch_ohlcv(self, symbol: str, timeframe: str, since: int, limit: int) -> list[list[float]]:
        self.since.append(since)
        return [r for r in self.rows if since <= r[0] < since + limit * HOUR]


def _fake_settings(tmp_path: Path):
    return load_settings(
        None,
        env={},
        overrides={"market": {"since": "2020-01-01"}, "data": {"dir": str(tmp_path / "data")}},
    )


def test_outage_longer_than_a_page_is_skipped_not_a_stall(history, tmp_path):
    candles = history.iloc[:100].drop(
        index=range(30, 60)
    )  # 30 candles missing: three empty pages of 10
    fake = _WindowPagedExchange(candles)
    now = _open_ms(history, 100) + 1000
    s = _fake_settings(tmp_path)
    summary = update_series(s, progress=False, exchange=fake, now_ms=lambda: now)
    assert summary.count == 70 and (summary.gaps.count, summary.gaps.missing) == (1, 30)
    assert summary.last == history["timestamp"].iloc[99]
    assert len(fake.since) == 10  # every window asked once, the empty ones included
    fake.since.clear()
    assert (
        update_series(s, progress=False, exchange=fake, now_ms=lambda: now).added == 0
        and fake.since == []
    )


def test_empty_market_list_is_a_temporary_error_naming_the_url(history, tmp_path):
    fake = _WindowPagedExchange(history.iloc[:10], markets={})
    with pytest.raises(
        TemporaryError,
        match=r"fakex returned no markets from http://127.0.0.1:9/api/v3; .*retry later",
    ):
        update_series(
            _fake_settings(tmp_path),
            progress=False,
            exchange=fake,
            now_ms=lambda: _open_ms(history, 10),
        )
    assert fake.since == []


@pytest.mark.parametrize("error", [ccxt.BadResponse, ccxt.NullResponse])
def test_bad_or_empty_responses_are_retried_then_one_line(error):
    body = "binance GET https://api.binance.com/api/v3/klines?signature=abcdef123456\n<html>\n<body>502 Bad Gateway</body>\n</html>"
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise error(body)

    with pytest.raises(TemporaryError) as exc:
        call_with_retry(
            broken, max_retries=2, base_delay=0, sleep=lambda _: None, what="fetch_ohlcv"
        )
    msg = str(exc.value)
    assert len(calls) == 3 and "after 3 attempts" in msg and error.__name__ in msg
    assert "\n" not in msg and "abcdef123456" not in msg and "<html>" not in msg
    attempts = iter([error(body)])

    def flaky() -> str:
        err = next(attempts, None)
        if err:
            raise err
        return "ok"

    assert call_with_retry(flaky, max_retries=2, base_delay=0, sleep=lambda _: None) == "ok"
