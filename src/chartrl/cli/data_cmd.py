"""chartrl fetch | import | data: get candles into the store and see what is there."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from chartrl.cli.app import add_series_options, parse_date, settings
from chartrl.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "fetch",
        help="fetch candles from the exchange into the store (incremental)",
        description="Fetch closed candles through ccxt into the Parquet store. Without --since, continues "
        "after the newest stored candle (or from market.since when nothing is stored).",
    )
    add_series_options(f, date_range=False)
    f.add_argument(
        "--since",
        "--from",
        dest="since",
        metavar="DATE",
        action=_Spelled,
        help="first candle to fetch, UTC, ISO 8601 (2021-06-01 or 2021-06-01T12:00); backfills and merges",
    )
    f.add_argument(
        "--until",
        metavar="DATE",
        help="last candle to fetch, inclusive, UTC, ISO 8601 (default: the newest closed one)",
    )
    f.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="refuse any repair of the fetched candles",
    )
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=_fetch)

    i = sub.add_parser(
        "import",
        help="import a candle CSV (CryptoDataDownload exports or timestamp,open,high,low,close,volume)",
        description="Validate a candle CSV and merge it into the store; every repair is named, counted and logged.",
    )
    i.add_argument("file", type=Path, metavar="FILE", help="the CSV file")
    add_series_options(i, date_range=False)
    i.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="refuse the file if any row needs repair",
    )
    i.set_defaults(func=_import)

    d = sub.add_parser(
        "data",
        help="list stored candle series: range, count, gaps, repairs",
        description="List every stored series (exchange, symbol, timeframe) with its first and last candle, count, "
        "gaps (never filled), the repairs each validation rule made and where the candles came from. Reads only "
        "the file footers, so it is quick; exits 1 when a stored file is unusable (and says which).",
    )
    d.add_argument(
        "--data-dir",
        type=Path,
        help="data directory (default: $CHARTRL_DATA_DIR, else config data.dir)",
    )
    g = d.add_argument_group("filters (default: every stored series)")
    g.add_argument("--exchange", help="only this ccxt exchange id")
    g.add_argument("--symbol", help="only this symbol, e.g. BTC/USDT")
    g.add_argument("--timeframe", help="only this timeframe, e.g. 1h")
    d.set_defaults(func=_data)


class _Spelled(argparse.Action):
    """Stores the value and the option spelling typed (--since or its alias --from), so an error names it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_option", option_string)


def _strict(args: argparse.Namespace) -> dict[str, Any]:
    return {"data": {"strict": True}} if args.strict else {}


def _fetch(args: argparse.Namespace) -> None:
    from chartrl.market.fetch import update_series

    s = settings(args, **_strict(args))
    since_option = getattr(args, "since_option", "--since")
    since = parse_date(args.since, since_option)
    until = parse_date(args.until, "--until")
    if since and until and until < since:
        raise UsageError(
            f"--until {until:%Y-%m-%d %H:%M} is before {since_option} {since:%Y-%m-%d %H:%M}; the range is empty"
        )
    summary = update_series(s, since=since, until=until, progress=not args.no_progress)
    report = summary.report
    print(
        f"{summary.series}: {summary.added:,} new candles, {summary.replaced:,} replaced; stored {summary.count:,} "
        f"from {_ts(summary.first)} to {_ts(summary.last)}"
    )
    if report is not None and report.repairs:
        print(f"repairs: {report.describe()}")
    print(f"gaps: {summary.gaps.describe()}")


def _import(args: argparse.Namespace) -> None:
    from chartrl.daemon.lock import data_dir_lock
    from chartrl.market.importer import import_csv
    from chartrl.market.store import CandleStore

    s = settings(args, **_strict(args))
    with data_dir_lock(s.data_dir, "import"):  # one writer per data dir
        summary = import_csv(
            args.file,
            CandleStore(s.data_dir),
            s.exchange.id,
            s.market.symbol,
            s.market.timeframe,
            strict=s.data.strict,
            spike_factor=s.data.spike_factor,
        )
    report = summary.report
    assert report is not None
    print(f"{args.file}: {report.rows_in:,} rows read, {report.rows_out:,} valid candles")
    for hit in report.repairs.values():
        # replaced_stored is the one rule that keeps the row: the file's values replaced the stored ones.
        what = (
            f"replaced {hit.count:,} stored candles"
            if hit.rule == "replaced_stored"
            else f"dropped {hit.count:,} rows"
        )
        print(f"  {what} by rule {hit.rule}, e.g. {hit.examples[0] if hit.examples else ''}")
    for note in report.notes:
        print(f"  note: {note}")
    print(f"  gaps: {report.gaps.describe()}")
    print(
        f"{summary.series}: {summary.added:,} new candles, {summary.replaced:,} replaced; stored {summary.count:,} "
        f"from {_ts(summary.first)} to {_ts(summary.last)} in {summary.path}"
    )


def _ts(ts: Any) -> str:
    return "-" if ts is None else f"{ts:%Y-%m-%d %H:%M}"


def _data(args: argparse.Namespace) -> int | None:
    from rich.console import Console
    from rich.table import Table

    from chartrl.market.store import CandleStore

    s = settings(args)
    store = CandleStore(s.data_dir)
    series = store.list_series(args.exchange, args.symbol, args.timeframe)
    # A pipe or a log file gets a fixed width instead of rich's 80 columns, so rows stay whole.
    console = Console(width=None if sys.stdout.isatty() else 120)
    if not series:
        wanted = " ".join(x for x in (args.exchange, args.symbol, args.timeframe) if x)
        console.print(
            f"no {wanted + ' ' if wanted else ''}candles stored in {store.root}; run `chartrl fetch` or `chartrl import FILE`"
        )
        return None
    table = Table(title=f"candles in {store.root}")
    for col in (
        "exchange",
        "symbol",
        "tf",
        "first",
        "last",
        "candles",
        "gaps",
        "missing",
        "largest",
    ):
        right = col in ("candles", "gaps", "missing", "largest")
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    broken = [x for x in series if x.error]
    for x in series:
        if x.error:
            table.add_row(
                x.exchange, x.symbol, x.timeframe, "[bold red]unusable[/]", "-", "-", "-", "-", "-"
            )
            continue
        table.add_row(
            x.exchange,
            x.symbol,
            x.timeframe,
            _ts(x.first),
            _ts(x.last),
            f"{x.count:,}",
            str(x.gaps.count),
            f"{x.gaps.missing:,}",
            str(x.gaps.largest),
        )
    console.print(table)
    console.print(
        "gaps count missing candles (never filled); largest = candles missing in the largest gap"
    )
    for x in broken:
        print(f"error: {x.error}", file=sys.stderr)
    for x in series:
        if x.error:
            continue
        console.print(f"\n{x.series}", highlight=False)
        repairs = (
            ", ".join(
                f"{rule} {n:,}" for rule, n in sorted(x.repairs.items(), key=lambda kv: -kv[1])
            )
            or "none"
        )
        console.print(
            f"  repairs (rows dropped or replaced, per rule): {repairs}",
            highlight=False,
            soft_wrap=True,
        )
        for name, v in x.sources.items():
            console.print(
                f"  source {name}: {v.get('merges', 0)} merges, {v.get('rows_in', 0):,} rows in, {v.get('added', 0):,} added, "
                f"{v.get('replaced', 0):,} replaced, last {str(v.get('last_at', '?'))[:16]}",
                highlight=False,
                soft_wrap=True,
            )
        if x.gaps.count:
            console.print(
                f"  gaps, largest first: {'; '.join(x.gaps.examples)}",
                highlight=False,
                soft_wrap=True,
            )
    return 1 if broken else None
