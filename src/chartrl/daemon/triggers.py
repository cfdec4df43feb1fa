"""APScheduler triggers of the daemon's jobs: the tick after every candle close, the retrain cron."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from chartrl.errors import OperationalError
from chartrl.timeframe import timeframe_seconds

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def tick_trigger(timeframe: str, delay_seconds: float) -> Any:
    """APScheduler trigger firing ``delay_seconds`` after every candle close of ``timeframe``.

    Exchanges align candles to the epoch for minutes, hours and days, so an interval anchored at
    the epoch hits every close. Weeks start on Monday 00:00 UTC and months on the 1st, which an
    interval cannot express: those get a cron trigger.
    """
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    seconds = timeframe_seconds(timeframe)
    delay = timedelta(seconds=delay_seconds)
    whole = int(delay_seconds)  # cron has whole seconds; sub-second delays only matter for intraday
    if timeframe.endswith("w"):
        if seconds != 7 * 86400:
            raise OperationalError(
                f"market.timeframe = {timeframe!r}: only 1w is supported among weekly timeframes"
            )
        return CronTrigger(
            day_of_week="mon",
            hour=whole // 3600,
            minute=whole // 60 % 60,
            second=whole % 60,
            timezone=UTC,
        )
    if timeframe.endswith("M"):
        if timeframe != "1M":
            raise OperationalError(
                f"market.timeframe = {timeframe!r}: only 1M is supported among monthly timeframes"
            )
        return CronTrigger(
            day=1, hour=whole // 3600, minute=whole // 60 % 60, second=whole % 60, timezone=UTC
        )
    return IntervalTrigger(seconds=seconds, start_date=_EPOCH + delay, timezone=UTC)


def retrain_trigger(cron: str) -> Any:
    """A UTC cron trigger from the five crontab fields of ``daemon.retrain_cron``."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        return CronTrigger.from_crontab(cron, timezone=UTC)
    except ValueError as exc:
        raise OperationalError(
            f"daemon.retrain_cron = {cron!r}: {exc}; use five crontab fields, e.g. '0 3 * * *'"
        ) from None
