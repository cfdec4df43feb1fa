"""Fetch candles from any ccxt exchange into the store: paginated, retried, incremental.

``update_series`` is the one entry point (``chartrl fetch`` and the daemon's tick both call it):
with nothing given it fetches only after the newest stored candle, so the every-candle case costs
one page request. The still-open candle (open time + timeframe > the exchange's now) is never
stored: it would change after we stored it. The symbol's market info (fee, precision, minimums)
is stored beside the candles for backtests (``chartrl.market.markets``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pandas as pd

from chartrl.account.fills import TICK_SIZE
from chartrl.config.settings import Settings
from chartrl.errors import DataError, TemporaryError, UsageError
from chartrl.logs import get_logger
from chartrl.market.candles import COLUMNS, from_ms
from chartrl.market.exchange import (
    ExchangeRefusedError,
    call_with_retry,
    make_exchange,
    short_error,
)
from chartrl.market.markets import save_market
from chartrl.market.store import CandleStore, SeriesSummary
from chartrl.market.validate import fmt_ts
from chartrl.timeframe import candle_close_ms, candle_open_ms, last_closed_open_ms, timeframe_ms

log = get_logger("chartrl.market.fetch")

DEFAULT_PAGE_LIMIT = 500


def _retry_opts(settings: Settings) -> dict[str, Any]:
    return {
        "max_retries": settings.exchange.max_retries,
        "base_delay": settings.exchange.retry_base_delay,
    }


def page_limit(exchange: Any) -> int:
    """Candles per request: the exchange's documented maximum (ccxt features), else 500."""
    try:
        limit = exchange.features["spot"]["fetchOHLCV"]["limit"]
    except (KeyError, TypeError, AttributeError):
        limit = None
    return int(limit) if limit else DEFAULT_PAGE_LIMIT


def check_market(exchange: Any, symbol: str, timeframe: str, **retry: Any) -> None:
    """Load markets (retried) and refuse an unknown symbol or timeframe with close matches."""
    markets = call_with_retry(exchange.load_markets, what=f"{exchange.id} load_markets", **retry)
    if (
        not markets
    ):  # an outage or a proxy answering 200 with nothing: no reason to blame the symbol
        raise TemporaryError(
            f"{exchange.id} returned no markets from {_api_url(exchange)}; the exchange or exchange.api_url may be "
            "down or misconfigured, retry later"
        )
    if symbol not in markets:
        close = difflib.get_close_matches(symbol, list(markets), n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}" if close else "see the exchange's market list"
        raise UsageError(f"{exchange.id} has no market {symbol!r}; {hint}")
    timeframes = getattr(exchange, "timeframes", None) or {}
    if timeframes and timeframe not in timeframes:
        raise UsageError(
            f"{exchange.id} has no {timeframe!r} candles; use one of {', '.join(list(timeframes)[:12])}"
        )


def _api_url(exchange: Any) -> str:
    """The first REST URL the exchange uses (``api_url`` when redirected), for messages."""
    urls: Any = getattr(exchange, "urls", {}).get("api")
    while isinstance(urls, dict) and urls:
        urls = urls.get("public") or next(iter(urls.values()))
    return urls if isinstance(urls, str) else "its API"


def exchange_now_ms(exchange: Any, **retry: Any) -> int:
    """The exchange's clock when it serves one (decides which candle is still open), else ours."""
    import ccxt

    if exchange.has.get("fetchTime"):
        try:
            return int(
                call_with_retry(exchange.fetch_time, what=f"{exchange.id} fetch_time", **retry)
            )
        except (ccxt.BaseError, ExchangeRefusedError, UsageError, ValueError, TypeError) as exc:
            log.debug("exchange_time_unavailable", exchange=exchange.id, error=short_error(exc))
    return int(exchange.milliseconds())


def fetch_range(
    exchange: Any,
    symbol: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    *,
    limit: int | None = None,
    progress: bool = True,
    **retry: Any,
) -> list[list[float]]:
    """Every candle with ``start_ms <= open time <= end_ms``, one page at a time (retried per page).

    An empty page does not end the range: exchanges that page by time window answer an outage
    longer than a page with nothing, and stopping there would restart at the same place forever.
    The window is skipped (logged once per run of empty pages; the store reports it as a gap).
    """
    step = timeframe_ms(
        timeframe
    )  # months: a nominal 30 days, for the progress bar and empty pages only
    limit = limit or page_limit(exchange)
    rows: list[list[float]] = []
    since = start_ms
    empty_from: int | None = None  # start of the current run of empty pages
    total = max((end_ms - start_ms) // step + 1, 1)
    bar, task = _progress(progress, f"{exchange.id} {symbol} {timeframe}", total)
    try:
        while since <= end_ms:
            page = call_with_retry(
                exchange.fetch_ohlcv,
                symbol,
                timeframe,
                since=since,
                limit=limit,
                what=f"{exchange.id} fetch_ohlcv {symbol} {timeframe} since {fmt_ts(pd.Timestamp(since, unit='ms'))}",
                **retry,
            )
            # Some exchanges answer an out-of-range `since` with their latest candles: keep only ours.
            page = [r for r in page if since <= r[0] <= end_ms]
            if not page:
                empty_from = since if empty_from is None else empty_from
                # Months: `limit` nominal 30-day steps fall short of `limit` months, so nothing is skipped.
                since += limit * step
                continue
            if empty_from is not None:
                _log_empty(exchange, symbol, timeframe, empty_from, int(page[0][0]))
                empty_from = None
            rows.extend(page)
            last = int(page[-1][0])
            if bar is not None:
                bar.update(task, completed=min((last - start_ms) // step + 1, total))
            since = candle_close_ms(
                last, timeframe
            )  # the next candle's open (calendar months differ in length)
    finally:
        if bar is not None:
            bar.update(task, completed=total)
            bar.stop()
    if empty_from is not None:
        _log_empty(exchange, symbol, timeframe, empty_from, end_ms + step)
    return rows


def _log_empty(exchange: Any, symbol: str, timeframe: str, start_ms: int, stop_ms: int) -> None:
    log.warning(
        "fetch_window_empty",
        exchange=exchange.id,
        symbol=symbol,
        timeframe=timeframe,
        start=fmt_ts(pd.Timestamp(start_ms, unit="ms")),
        before=fmt_ts(pd.Timestamp(stop_ms, unit="ms")),
        meaning="the exchange served no candles in this window (an outage?); skipped, it shows as a gap",
    )


def _progress(enabled: bool, label: str, total: int) -> tuple[Any, Any]:
    if not enabled:
        return None, None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, task


def _store_market(settings: Settings, exchange: Any) -> None:
    """Keep the market info beside the candles: a backtest then fills under the same precision and
    limits as the paper account, offline (see chartrl.market.markets)."""
    try:
        save_market(
            settings.data_dir,
            settings.exchange.id,
            settings.market.symbol,
            exchange.markets[settings.market.symbol],
            getattr(exchange, "precisionMode", TICK_SIZE),
        )
    except (OSError, TypeError, ValueError) as exc:  # a cache only: never fail a fetch for it
        log.warning("market_info_not_saved", error=str(exc)[:200])


def _utc_ms(value: datetime | pd.Timestamp | str) -> int:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def update_series(
    settings: Settings,
    since: datetime | pd.Timestamp | str | None = None,
    until: datetime | pd.Timestamp | str | None = None,
    progress: bool = True,
    *,
    exchange: Any = None,
    store: CandleStore | None = None,
    now_ms: Callable[[], int] | None = None,
    screen: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> SeriesSummary:
    """Fetch the configured series into the store and return its summary (``.added`` = new candles).

    ``since`` None: continue after the newest stored candle (or from ``market.since`` when nothing
    is stored); a date: fetch from there (backfill), merging. ``until``: last candle open time,
    inclusive. ``exchange`` reuses a ccxt instance (its markets stay loaded, so a tick is one
    request); ``now_ms`` overrides the exchange clock (a simulated clock).
    """
    from chartrl.daemon.lock import data_dir_lock

    # One writer per data dir: refused while another process (a daemon, an import) holds it.
    with data_dir_lock(settings.data_dir, "fetch"):
        return _update_series(settings, since, until, progress, exchange, store, now_ms, screen)


def _update_series(
    settings: Settings,
    since: datetime | pd.Timestamp | str | None,
    until: datetime | pd.Timestamp | str | None,
    progress: bool,
    exchange: Any,
    store: CandleStore | None,
    now_ms: Callable[[], int] | None,
    screen: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> SeriesSummary:
    ex_id, symbol, tf = settings.exchange.id, settings.market.symbol, settings.market.timeframe
    store = store or CandleStore(settings.data_dir)
    exchange = exchange or make_exchange(settings.exchange)
    retry = _retry_opts(settings)
    if symbol not in (
        getattr(exchange, "markets", None) or {}
    ):  # loaded once per exchange instance
        check_market(exchange, symbol, tf, **retry)
    _store_market(settings, exchange)
    last = store.last_timestamp(ex_id, symbol, tf)
    if last is not None and since is None:
        start = candle_close_ms(
            _utc_ms(last), tf
        )  # the next candle's open, a calendar month on for 1M
    else:
        start = candle_open_ms(_utc_ms(since if since is not None else settings.market.since), tf)
    now = now_ms() if now_ms is not None else exchange_now_ms(exchange, **retry)
    newest_closed = last_closed_open_ms(now, tf)
    end = newest_closed if until is None else min(_utc_ms(until), newest_closed)
    if since is not None and start > newest_closed:
        raise UsageError(
            f"--since {fmt_ts(pd.Timestamp(start, unit='ms'))} is after the newest closed {symbol} {tf} candle "
            f"({fmt_ts(pd.Timestamp(newest_closed, unit='ms'))}); nothing can be fetched from there yet"
        )
    rows = (
        fetch_range(exchange, symbol, tf, start, end, progress=progress, **retry)
        if start <= end
        else []
    )
    # The exchange serves the still-open candle last; it changes until it closes, so never store it.
    rows = [r for r in rows if candle_close_ms(int(r[0]), tf) <= now]
    log.info(
        "candles_fetched",
        exchange=ex_id,
        symbol=symbol,
        timeframe=tf,
        rows=len(rows),
        start=fmt_ts(pd.Timestamp(start, unit="ms")),
    )
    if not rows:
        if last is None:
            raise DataError(
                f"{ex_id} returned no closed {symbol} {tf} candles from {fmt_ts(pd.Timestamp(start, unit='ms'))}; "
                "check --since/market.since and that the market existed then"
            )
        return store.summary(ex_id, symbol, tf)
    df = pd.DataFrame([r[:6] for r in rows], columns=COLUMNS)
    df["timestamp"] = from_ms(df["timestamp"].astype("int64"))
    if screen is not None:  # the daemon holds suspect prices apart (daemon/sanity.py)
        df = screen(df)
        if df.empty:
            return store.summary(ex_id, symbol, tf)
    return store.ingest(
        ex_id,
        symbol,
        tf,
        df,
        source=f"ccxt:{ex_id}",
        strict=settings.data.strict,
        spike_factor=settings.data.spike_factor,
    )
