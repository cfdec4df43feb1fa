"""What the daemon refuses to run with, as one list: ``chartrl config check``, the start of
``chartrl run`` and every SIGHUP reload apply the same checks, so an edit that ``config check``
accepts can never stop a running daemon (issue 12, item 3)."""

from __future__ import annotations

from chartrl.config.settings import Settings
from chartrl.errors import ChartrlError, ConfigError


def recv_window_seconds(exchange_id: str, configured_ms: int | None = None) -> float:
    """The signed-request receive window: exchange.recv_window_ms, else ccxt's default for the
    exchange (binance 10 s, bybit 5 s; 0 where it has none)."""
    import ccxt

    if configured_ms is not None:
        return configured_ms / 1000
    try:
        options = getattr(ccxt, exchange_id)().options or {}
    except Exception:  # noqa: BLE001 - an exchange class that cannot be built has no window to honour
        return 0.0
    window = options.get("recvWindow")
    return float(window) / 1000 if isinstance(window, (int, float)) else 0.0


def daemon_problems(settings: Settings) -> list[str]:
    """One line per setting the daemon would refuse (empty: it runs)."""
    from chartrl.daemon.triggers import retrain_trigger, tick_trigger

    problems = []
    try:
        tick_trigger(settings.market.timeframe, settings.daemon.tick_delay_seconds)
    except ChartrlError as exc:
        problems.append(str(exc))
    try:  # checked even when disabled: enabling it later must not be the edit that fails
        retrain_trigger(settings.daemon.retrain_cron)
    except ChartrlError as exc:
        problems.append(str(exc))
    symbols = settings.market.all_symbols
    if settings.trading.mode == "live" and len(symbols) > 1:
        # The live balance check compares the whole exchange account with one symbol's own fills:
        # a second symbol's fills on the same account would read as a mismatch and halt both.
        problems.append(
            f"trading.mode = 'live' with market.symbols = {symbols}: live trading runs one symbol "
            "per daemon (each with its own data dir and exchange account); list one symbol, or "
            "trade the others in paper mode"
        )
    unknown = sorted(set(settings.risk.per_symbol) - set(symbols))
    if unknown and settings.market.symbols is not None:
        problems.append(
            f"risk.per_symbol names {', '.join(unknown)}, which market.symbols {symbols} does not "
            "list; fix the symbol or drop its entry"
        )
    if settings.trading.mode == "live":
        grace = settings.trading.order_lookup_grace_seconds
        timeout = settings.exchange.timeout_ms / 1000
        window = recv_window_seconds(settings.exchange.id, settings.exchange.recv_window_ms)
        if grace <= timeout + window:
            problems.append(
                f"trading.order_lookup_grace_seconds = {grace:g} must exceed exchange.timeout_ms "
                f"({timeout:g} s) + the recvWindow (exchange.recv_window_ms, {window:g} s): a request "
                f"still in flight could fill after its order was given up; use at least "
                f"{timeout + window + 1:g}"
            )
    return problems


def check_daemon_settings(settings: Settings, source: str | None = None) -> None:
    """Raise ConfigError (exit 2, one line per problem) for what the daemon would refuse."""
    problems = daemon_problems(settings)
    if problems:
        raise ConfigError(problems, source=source)
