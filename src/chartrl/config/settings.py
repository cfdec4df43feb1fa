"""Typed, frozen settings. Each field is documented; ``chartrl config show`` prints them all.

The defaults are the paper-trading default (``config/chartrl.toml`` at the repository root is the
same settings written out, and a test keeps the two equal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from chartrl.chart.spec import ChartSpec
from chartrl.symbols import base_quote
from chartrl.timeframe import timeframe_seconds


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExchangeSettings(_Section):
    id: str = Field("binance", description="ccxt exchange id, e.g. binance, upbit, kraken.")
    api_url: str | None = Field(
        None,
        description="Base URL that replaces the exchange's REST hosts (the loopback emulator, e.g. "
        "http://127.0.0.1:8765). Empty for the real exchange.",
    )
    timeout_ms: int = Field(
        10_000, ge=100, le=600_000, description="ccxt request timeout in milliseconds."
    )
    recv_window_ms: int | None = Field(
        None,
        ge=1,
        le=60_000,
        description="Receive window of signed requests in milliseconds (a request arriving later is refused "
        "by the exchange); empty = ccxt's default (binance 10000). The live order lookup grace must exceed it plus timeout_ms.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="API key. Set CHARTRL__EXCHANGE__API_KEY or use key_file; never in the TOML.",
    )
    api_secret: SecretStr | None = Field(
        None, description="API secret. Set CHARTRL__EXCHANGE__API_SECRET or use key_file."
    )
    key_file: Path | None = Field(
        None,
        description="TOML file with api_key and api_secret, readable by its owner only (chmod 600).",
    )
    max_retries: int = Field(
        5, ge=0, le=50, description="Retries of a temporary exchange error before giving up."
    )
    retry_base_delay: float = Field(
        1.0,
        ge=0,
        le=60,
        description="First retry delay in seconds; doubles each retry, with jitter.",
    )

    @field_validator("id")
    @classmethod
    def _known_exchange(cls, v: str) -> str:
        import ccxt

        if v not in ccxt.exchanges:
            raise ValueError(
                "unknown ccxt exchange id; use one of ccxt.exchanges, e.g. binance, kraken, upbit"
            )
        return v

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit

        if v is None:
            return None
        try:
            u = urlsplit(v)
            u.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            u = None
        if u is None or u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(
                "must be an http(s) URL such as http://127.0.0.1:8765; leave it unset for the real exchange"
            )
        return v


def _check_symbol(v: str) -> str:
    base, sep, quote = v.partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"symbol {v!r} must be BASE/QUOTE, e.g. BTC/USDT")
    return v


class MarketSettings(_Section):
    symbol: str = Field(
        "BTC/USDT",
        description="Unified ccxt symbol BASE/QUOTE. With market.symbols set: the one of them that "
        "single-series commands (backtest, train, fetch, status --symbol) use; default its first.",
    )
    symbols: list[str] | None = Field(
        None,
        description="Daemon: several symbols traded at once, one tick job, book, recurrent state, "
        "risk limits and halts each (docs/daemon.md). Empty = market.symbol alone.",
    )
    reporting_currency: str | None = Field(
        None,
        description="Currency `chartrl status` totals every symbol's equity in (converted at stored "
        "prices; a missing price is said, never guessed). Empty = the quote of market.symbol.",
    )
    timeframe: str = Field(
        "1h", description="Candle timeframe (ccxt name: 1m, 5m, 15m, 1h, 4h, 1d...)."
    )
    since: str = Field(
        "2017-08-01", description="First date fetched when nothing is stored yet (UTC)."
    )

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        return _check_symbol(v)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("an empty list trades nothing; list one symbol or more, or drop it")
        for sym in v:
            _check_symbol(sym)
        twice = sorted({sym for sym in v if v.count(sym) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed twice; list each symbol once")
        return v

    @field_validator("reporting_currency")
    @classmethod
    def _currency(cls, v: str | None) -> str | None:
        if v is not None and (not v.isalnum() or v != v.upper()):
            raise ValueError("must be a currency code in capitals, e.g. USDT, BTC, KRW")
        return v

    @model_validator(mode="after")
    def _symbol_in_symbols(self) -> MarketSettings:
        if self.symbols is None:
            return self
        if "symbol" not in self.model_fields_set:
            # Single-series commands default to the first listed symbol.
            object.__setattr__(self, "symbol", self.symbols[0])
        elif self.symbol not in self.symbols:
            raise ValueError(
                f"market.symbol = {self.symbol!r} is not one of market.symbols "
                f"{self.symbols}; drop market.symbol or add it to market.symbols"
            )
        return self

    @property
    def all_symbols(self) -> list[str]:
        """Every symbol the daemon trades: market.symbols, else market.symbol alone."""
        return list(self.symbols) if self.symbols is not None else [self.symbol]

    @property
    def reporting(self) -> str:
        """The currency totals are reported in."""
        return self.reporting_currency or base_quote(self.symbol)[1]

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, v: str) -> str:
        timeframe_seconds(v)
        return v

    @field_validator("since", mode="before")
    @classmethod
    def _date_as_text(cls, v: object) -> object:
        # An unquoted TOML date (since = 2018-01-01, also via CHARTRL__MARKET__SINCE) arrives as a date.
        from datetime import date

        return v.isoformat() if isinstance(v, date) else v

    @field_validator("since")
    @classmethod
    def _iso_date(cls, v: str) -> str:
        from datetime import datetime

        try:
            datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("must be an ISO date such as 2017-08-01 (UTC)") from None
        return v


class DataSettings(_Section):
    dir: Path = Field(
        Path("~/.local/share/chartrl"),
        description="Data directory: candles, ledger, models, reports.",
    )
    strict: bool = Field(
        False,
        description="Refuse any repair of incoming candles instead of repairing and logging it.",
    )
    spike_factor: float = Field(
        3.0,
        ge=0,
        description="Drop an isolated candle with a price more than this many times away from both the previous "
        "and the next candle's close (rule price_spike, an implausible print; the newest candle is never judged); "
        "0 turns the rule off.",
    )
    price_band: float = Field(
        0.25,
        ge=0,
        description="Daemon: a fetched candle whose prices differ from the last trusted close by more than this "
        "fraction (either way) is suspect: the newest is quarantined (not stored, not traded, judged again at "
        "the next fetch); an older one is kept when the next candle confirms it. 0 turns it off.",
    )


class TradingSettings(_Section):
    mode: Literal["paper", "live"] = Field(
        "paper", description="paper (simulated fills) or live (real orders; also needs --live)."
    )
    initial_cash: float = Field(
        10_000.0,
        gt=0,
        description="Starting cash of a paper or backtest account, in the quote currency (each symbol's "
        "paper book starts with it).",
    )
    initial_cash_by_quote: dict[str, float] = Field(
        default_factory=dict,
        description="Starting cash of the paper books of symbols with these quote currencies, e.g. "
        "{ BTC = 0.5 } for ETC/BTC beside USDT pairs; a quote not listed starts with initial_cash.",
    )
    fee: float | None = Field(
        0.001,
        ge=0,
        lt=0.1,
        description="Taker fee per side as a fraction (0.001 = 0.1%); empty = the exchange's from market info.",
    )
    slippage_bps: float = Field(
        5.0, ge=0, le=1000, description="Slippage against the fill price in basis points."
    )
    position_fraction: float = Field(
        1.0, gt=0, le=1, description="Fraction of equity a buy invests (1 = all-in/all-out)."
    )
    buy_margin_bps: float = Field(
        50.0,
        ge=0,
        le=1000,
        description="Live, on an exchange that cannot buy by quote amount: headroom in basis points (beyond "
        "slippage_bps and the fee) left when a market buy is sized from the ticker.",
    )

    @field_validator("initial_cash_by_quote")
    @classmethod
    def _cash_by_quote(cls, v: dict[str, float]) -> dict[str, float]:
        for currency, cash in v.items():
            if not currency.isalnum() or currency != currency.upper():
                raise ValueError(f"key {currency!r} must be a quote currency in capitals, e.g. BTC")
            if not cash > 0:
                raise ValueError(f"{currency} = {cash}: starting cash must be > 0")
        return v

    max_quote: float | None = Field(
        None,
        gt=0,
        description="Live: the quote budget the bot trades with (its own cash, plus what its own fills made "
        "or lost). Empty = the quote balance at the first live start. Holdings it did not buy are never sold.",
    )
    order_lookup_grace_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Live: an order the exchange does not know is declared never-arrived only this long after it was "
        "recorded (must exceed the request's recvWindow, 10 s in ccxt's binance), so a delayed request cannot double it.",
    )
    cancel_after_seconds: float = Field(
        120.0,
        ge=0,
        le=86400,
        description="Live: the unfilled remainder of an order still open this long after it was recorded is "
        "cancelled (what it filled stays); a cancel that fails halts trading with the reason.",
    )
    order_lost_deadline_seconds: float = Field(
        3600.0,
        ge=0,
        le=7 * 86400,
        description="Live: an order still unknown to the exchange after the lookup grace is looked up again, "
        "with backoff, until this long after it was recorded; only then is it declared never-arrived. No new "
        "order is sent meanwhile.",
    )


class RiskOverride(_Section):
    """One symbol's own risk limits (``[risk.per_symbol."ETH/USDT"]``); a field left out keeps
    the [risk] value."""

    max_position_value: float | None = Field(None, gt=0, description="As risk.max_position_value.")
    max_orders_per_day: int | None = Field(None, ge=1, description="As risk.max_orders_per_day.")
    max_daily_loss: float | None = Field(None, gt=0, le=1, description="As risk.max_daily_loss.")
    on_daily_loss: Literal["flatten", "stop_buying"] | None = Field(
        None, description="As risk.on_daily_loss."
    )
    stale_after_timeframes: float | None = Field(
        None, gt=0, description="As risk.stale_after_timeframes."
    )


class RiskSettings(_Section):
    max_position_value: float | None = Field(
        None,
        gt=0,
        description="Largest position value of one symbol, in its quote currency; empty = no limit.",
    )
    max_total_quote: dict[str, float] = Field(
        default_factory=dict,
        description="Largest value of all symbols' positions together, per quote currency (a table "
        '{ "USDT" = 5000.0, "BTC" = 0.2 }: BTC/USDT and ETH/USDT share the USDT total, ETC/BTC has '
        "the BTC one); a buy beyond it is capped or held. A quote not listed has no total limit.",
    )
    max_orders_per_day: int = Field(
        48, ge=1, description="Orders allowed per UTC day (per symbol)."
    )
    max_daily_loss: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Loss of equity since the UTC day's start that fires the kill switch.",
    )
    on_daily_loss: Literal["flatten", "stop_buying"] = Field(
        "stop_buying", description="What the kill switch does."
    )
    stale_after_timeframes: float = Field(
        2.0,
        gt=0,
        description="No trade when the newest closed candle is older than this many timeframes.",
    )
    halt_file: Path | None = Field(
        None,
        description="When this file exists, no order is sent, for any symbol (operator's manual halt). "
        "Empty = <data dir>/HALT.",
    )

    per_symbol: dict[str, RiskOverride] = Field(
        default_factory=dict,
        description='Own limits of some of market.symbols, e.g. [risk.per_symbol."ETH/USDT"] '
        "max_position_value = 500.0; the others (and every field left out) keep these.",
    )

    @field_validator("per_symbol")
    @classmethod
    def _override_symbols(cls, v: dict[str, RiskOverride]) -> dict[str, RiskOverride]:
        for symbol in v:
            _check_symbol(symbol)
        return v

    def for_symbol(self, symbol: str) -> RiskSettings:
        """The limits ``symbol`` trades under: these, with its per_symbol entry applied."""
        override = self.per_symbol.get(symbol)
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))

    @field_validator("max_total_quote")
    @classmethod
    def _quote_totals(cls, v: dict[str, float]) -> dict[str, float]:
        for currency, limit in v.items():
            if not currency.isalnum() or currency != currency.upper():
                raise ValueError(
                    f"key {currency!r} must be a quote currency in capitals, e.g. USDT"
                )
            if not limit > 0:
                raise ValueError(f"{currency} = {limit}: a total limit must be > 0")
        return v


class ModelSettings(_Section):
    strategy: str = Field(
        "cnnrnn",
        description="Policy: cnn, cnnrnn, gru, resnet, or a rule baseline (buyhold, sma, random).",
    )
    dir: Path | None = Field(
        None,
        description="Champion model directory (model.pt + model.json). Empty = <data dir>/models/champion.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto uses CUDA when present, else CPU."
    )
    per_symbol: bool = Field(
        False,
        description="One champion per symbol, in <model dir>/<BASE-QUOTE> (train it with --symbol), "
        "each retrained on its own candles; false = one model for every symbol of market.symbols.",
    )


class DaemonSettings(_Section):
    tick_delay_seconds: float = Field(
        5.0, ge=0, le=3600, description="Seconds after each candle close before the tick runs."
    )
    retrain_cron: str = Field(
        "0 3 * * *", description="When the nightly retrain runs (crontab fields, UTC)."
    )
    retrain_window_days: int = Field(
        180, ge=7, description="Days of recent candles the challenger is fine-tuned on."
    )
    eval_days: int = Field(
        60,
        ge=1,
        description="Most recent held-out days on which champion and challenger are compared; "
        "fewer than 60 leave a Sharpe difference whose standard error few challengers can beat.",
    )
    promote_margin: float = Field(
        0.0,
        description="Sharpe the challenger must beat the champion's by, on top of "
        "promote_se_multiple standard errors of the difference.",
    )
    promote_se_multiple: float = Field(
        1.0,
        ge=0,
        description="Standard errors of the Sharpe difference (block bootstrap of the paired "
        "held-out returns) the challenger must beat the champion by; 0 = compare the Sharpes only.",
    )
    promote_skill_p: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Highest skill test p-value (return against random placements of its own "
        "round trips) a challenger may have to be promoted; 1 = no skill test.",
    )
    min_eval_trades: int = Field(
        1,
        ge=0,
        description="Trades (round trips; a position still open at the end counts as one) a model must make on the "
        "held-out days for its Sharpe to be compared; a challenger with fewer, or with no Sharpe, is never promoted.",
    )
    heartbeat_seconds: float = Field(
        10.0, gt=0, description="Interval of the systemd watchdog heartbeat."
    )
    stuck_tick_seconds: float = Field(
        300.0,
        gt=0,
        description="A tick running longer than this stops the watchdog heartbeat, so systemd (WatchdogSec) restarts the service.",
    )
    retrain_enabled: bool = Field(True, description="Run the nightly retrain job.")
    max_clock_skew_seconds: float = Field(
        30.0,
        gt=0,
        description="No decision while the exchange's clock (ccxt fetch_time) and ours differ by more than "
        "this; which candle has closed is always decided by the exchange's clock.",
    )
    retrain_timeout: float = Field(
        4 * 3600.0,
        gt=0,
        description="Seconds a retrain child may run; then it is stopped (SIGTERM, SIGKILL 30 s later) and "
        "the next night's retrain can run.",
    )
    retrain_memory_mb: int | None = Field(
        None,
        ge=256,
        description="Address-space limit (RLIMIT_AS) of the retrain child in MiB; empty = none (CUDA reserves "
        "far more address space than it uses: on a GPU prefer the systemd slice setting in docs/daemon.md).",
    )
    retrain_epochs: int = Field(
        2,
        ge=1,
        le=1000,
        description="DQN epochs the challenger is fine-tuned for on the recent window.",
    )


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level logged."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto = console in a terminal, JSON lines otherwise."
    )


# --- console (issue 13) -------------------------------------------------------------------------
MIN_TOKEN_LENGTH = 16
"""A shorter console token could be guessed over HTTP."""


class ConsoleSettings(_Section):
    enabled: bool = Field(False, description="Serve the console inside `chartrl run`.")
    host: str = Field("127.0.0.1", description="Address the console binds (loopback by default).")
    port: int = Field(8787, ge=1, le=65535, description="TCP port of the console.")
    token: SecretStr | None = Field(
        None, description="Bearer token for the console; set it with CHARTRL__CONSOLE__TOKEN."
    )
    token_file: Path | None = Field(
        None, description='File (mode 0600) holding the console\'s bearer token as token = "...".'
    )

    @field_validator("token")
    @classmethod
    def _strong_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"at least {MIN_TOKEN_LENGTH} characters; make one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return v


class Settings(_Section):
    """The whole configuration."""

    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    market: MarketSettings = Field(default_factory=MarketSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    chart: ChartSpec = Field(default_factory=ChartSpec)
    trading: TradingSettings = Field(default_factory=TradingSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    _shared_by: tuple[str, ...] = PrivateAttr(())

    @property
    def data_dir(self) -> Path:
        return self.data.dir.expanduser()

    @property
    def halt_file(self) -> Path:
        return (self.risk.halt_file or self.data_dir / "HALT").expanduser()

    @property
    def model_dir(self) -> Path:
        """The champion of market.symbol: model.dir (default <data dir>/models/champion), and
        under model.per_symbol that symbol's own directory in it (``.../champion/BTC-USDT``)."""
        base = (self.model.dir or self.data_dir / "models" / "champion").expanduser()
        return symbol_model_dir(base, self.market.symbol) if self.model.per_symbol else base

    def for_symbol(self, symbol: str) -> Settings:
        """These settings narrowed to one of market.symbols: what that symbol's tick, book and
        retrain see (market.symbol = it, no list; so with model.per_symbol its own model dir)."""
        if symbol not in self.market.all_symbols:
            raise ValueError(f"{symbol} is not one of {self.market.all_symbols}")
        market = self.market.model_copy(
            update={"symbol": symbol, "symbols": None, "reporting_currency": self.market.reporting}
        )
        cash = self.trading.initial_cash_by_quote.get(
            base_quote(symbol)[1], self.trading.initial_cash
        )
        trading = self.trading.model_copy(update={"initial_cash": cash})
        narrowed = self.model_copy(
            update={"market": market, "risk": self.risk.for_symbol(symbol), "trading": trading}
        )
        if len(self.market.all_symbols) > 1 and not self.model.per_symbol:
            narrowed._shared_by = tuple(self.market.all_symbols)
        return narrowed

    @property
    def model_shared_by(self) -> tuple[str, ...]:
        """The symbols whose ticks share this one model (empty: it serves market.symbol alone,
        and must have been trained on it)."""
        return self._shared_by


def symbol_slug(symbol: str) -> str:
    """``BTC/USDT`` -> ``BTC-USDT`` (``:SETTLE`` dropped): a symbol as a file or directory name."""
    return symbol.split(":")[0].replace("/", "-")


def symbol_model_dir(model_dir: Path, symbol: str) -> Path:
    """The champion of one symbol under model.per_symbol: ``<model dir>/<BASE-QUOTE>``."""
    return model_dir / symbol_slug(symbol)
