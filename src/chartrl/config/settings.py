"""Typed, frozen settings. Each field is documented; ``chartrl config show`` prints them all.

The defaults are the paper-trading default (``config/chartrl.toml`` at the repository root is the
same settings written out, and a test keeps the two equal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
)

from chartrl.chart.spec import ChartSpec
from chartrl.config.base import Section as _Section
from chartrl.config.market import (  # noqa: F401 - re-exported: settings import them from here
    MarketSettings,
    check_currency_amounts,
    symbol_model_dir,
    symbol_slug,
)
from chartrl.config.risk import RiskOverride, RiskSettings  # noqa: F401 - re-exported
from chartrl.symbols import base_quote


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
        return check_currency_amounts(v, "starting cash")

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
        description="One champion per symbol, in <model dir>/<BASE-QUOTE> (chartrl train --symbol "
        "X --out there), "
        "each retrained on its own candles; false = one model for every symbol of market.symbols.",
    )
    train_series: list[str] = Field(
        default_factory=list,
        description="`chartrl train` on several stored series at once, each "
        "exchange:BASE/QUOTE:timeframe (the default of --series; empty = the market's one series).",
    )
    train_series_weights: list[float] = Field(
        default_factory=list,
        description="Each train_series' share of the lanes and imitation samples (the default of "
        "--series-weights; empty = by their sizes).",
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
        return self.model_copy(
            update={"market": market, "risk": self.risk.for_symbol(symbol), "trading": trading}
        )
