"""The human-readable block ``chartrl status`` prints from a :class:`~chartrl.daemon.status.Status`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chartrl.daemon.status import Status


def _num(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"


def format_status(st: Status, halt_file: Path | None = None) -> str:
    """The human-readable block ``chartrl status`` prints."""
    lines = []
    state = f"running (pid {st.pid})" if st.running else "not running"
    lines.append(f"daemon        {state}")
    if st.per_symbol:
        from chartrl.daemon.status_symbols import format_lines

        lines.append(
            f"mode          {st.mode or '-'}   {len(st.per_symbol)} symbols {st.timeframe or ''}"
        )
        lines.append("symbols")
        lines += format_lines(st.per_symbol, st.total)
    else:
        lines.append(
            f"mode          {st.mode or '-'}   {st.symbol or '-'} {st.timeframe or ''}".rstrip()
        )
        lines.append(f"model         {st.model_version or '-'}")
    if st.position is not None and not st.per_symbol:
        lines.append(
            f"position      {st.position:.8f}   cash {st.cash:,.2f}"
            if st.cash is not None
            else f"position      {st.position:.8f}"
        )
    if st.external and any(v > 1e-12 for v in st.external.values()):
        held = ", ".join(f"{c} {v:.8g}" for c, v in st.external.items() if v > 1e-12)
        lines.append(f"external      {held}   (not bought by the bot: never traded)")
    if st.equity is not None and not st.per_symbol:
        vs = ""
        if st.initial_equity:
            vs = f"   vs start {st.initial_equity:,.2f} ({(st.equity / st.initial_equity - 1) * 100:+.2f}%)"
        lines.append(f"equity        {st.equity:,.2f}{vs}")
    if not st.per_symbol:  # several: each symbol's line has its decision and candle
        lines.append(f"last tick     {st.last_tick or '-'}   candle {st.last_candle or '-'}")
    if st.last_decision and not st.per_symbol:
        lines.append(f"decision      {st.last_decision}   ({st.last_reason})")
    lines.append(
        f"next tick     {st.next_tick or '-'}"
        + (
            f"   ticks done {st.ticks_done}, missed {st.ticks_missed}"
            if st.ticks_done is not None
            else ""
        )
    )
    if st.next_retrain:
        lines.append(f"next retrain  {st.next_retrain}")
    if st.last_retrain:
        r = st.last_retrain
        m = r.get("metrics") or {}
        scores = ""
        if "champion_score" in m or "challenger_score" in m:
            scores = f"   Sharpe: champion {_num(m.get('champion_score'))} vs challenger {_num(m.get('challenger_score'))}"
        if m.get("reason"):
            scores += f" ({m['reason']})"
        lines.append(
            f"last retrain  {r['status']} at {r['finished'] or r['started']}{scores}"
            + (f"   error: {r['error']}" if r.get("error") else "")
        )
    else:
        lines.append("last retrain  -")
    lines.append(f"open orders   {len(st.open_orders)}")
    for o in st.open_orders:
        lines.append(
            f"  {o['client_order_id']} {o['side']} {o['amount']} {o['symbol']} {o['state']} since {o['created']}"
        )
    halts = list(st.halts)
    if halts or (halt_file is not None and halt_file.exists()):
        lines.append(
            f"halts         {len(halts) + (1 if halt_file is not None and halt_file.exists() else 0)}"
        )
        for h in halts:
            which = f" of {h['symbol']}" if h.get("symbol") else ""
            lines.append(f"  {h['reason']}{which} since {h['since']} ({h['source']})")
        if halt_file is not None and halt_file.exists():
            lines.append(f"  manual halt file {halt_file} exists (delete it to resume trading)")
    else:
        lines.append("halts         none")
    return "\n".join(lines)
