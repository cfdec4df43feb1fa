"""The loopback HTTP server: routing, fault application and the ``ExchangeSim`` object tests hold."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pandas as pd

from chartrl.errors import DataError
from chartrl.logs import get_logger
from chartrl.testing.exchange_sim.auth import Auth
from chartrl.testing.exchange_sim.clock import SimClock
from chartrl.testing.exchange_sim.faults import Fault, FaultPlan
from chartrl.testing.exchange_sim.market import Market, SymbolRules
from chartrl.testing.exchange_sim.protocol import ApiError
from chartrl.testing.exchange_sim.series import CandleSeries
from chartrl.testing.exchange_sim.state import load_state, save_state
from chartrl.testing.exchange_sim.trading import Engine

DEFAULT_API_KEY = "sim-api-key"
DEFAULT_API_SECRET = "sim-api-secret"
_ERROR_PAGE = {500: "500 Internal Server Error", 503: "503 Service Temporarily Unavailable"}

log = get_logger("chartrl.exchange_sim")

Route = Callable[[dict[str, str], int], Any]


class ExchangeSim:
    """A Binance-spot-compatible REST server on 127.0.0.1 fed by a candle frame.

    Use as a context manager (or ``start()``/``stop()``); point ccxt at ``sim.url``. The default
    clock is manual and stands one second after the last candle opened.
    """

    def __init__(
        self,
        candles: pd.DataFrame,
        symbol: str = "BTC/USDT",
        timeframe: str = "1h",
        port: int = 0,
        clock: SimClock | None = None,
        balances: dict[str, float] | None = None,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        fee: float = 0.001,
        state_file: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        slippage: float = 0.0,
        partial_fills: int = 1,
        commission: str = "binance",
        market_price: str = "open",
        rules: SymbolRules | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        base, sep, quote = symbol.partition("/")
        if not sep or not base or not quote:
            raise ValueError(f"symbol {symbol!r} must be BASE/QUOTE, e.g. BTC/USDT")
        self.symbol = symbol
        self.series = CandleSeries(candles, timeframe)
        self.market = Market(self.series, base, quote, rules or SymbolRules())
        self.clock = clock or SimClock(self.series.last_ms + 1000)
        self.faults = faults or FaultPlan()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.state_file = Path(state_file) if state_file else None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._recent: deque[float] = deque()
        self._warned_end = False
        self.engine = Engine(
            self.market,
            {quote: 10_000.0} if balances is None else balances,
            fee,
            slippage,
            partial_fills,
            commission,
            market_price,
            on_change=self._persist,
        )
        if self.state_file is not None:
            saved = load_state(self.state_file)
            if saved is not None:
                try:
                    self.engine.restore(saved)
                except (
                    KeyError,
                    TypeError,
                    ValueError,
                    ArithmeticError,
                ) as exc:  # Decimal raises ArithmeticError kin
                    raise DataError(
                        f"emulator state file {self.state_file} is damaged ({type(exc).__name__}: {exc}); "
                        "delete it to start from the configured balances"
                    ) from None
                log.info(
                    "emulator state restored",
                    file=str(self.state_file),
                    orders=len(self.engine.orders),
                )
        self.auth = Auth(api_key, api_secret, self.clock.now_ms)
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        m = self.market
        self.public_routes: dict[tuple[str, str], Route] = {
            ("GET", "/api/v3/ping"): m.ping,
            ("GET", "/api/v3/time"): m.time,
            ("GET", "/api/v3/exchangeInfo"): m.exchange_info,
            ("GET", "/api/v3/klines"): m.klines,
            ("GET", "/api/v3/uiKlines"): m.klines,
            ("GET", "/api/v3/ticker/price"): m.ticker_price,
            ("GET", "/api/v3/ticker/24hr"): m.ticker_24hr,
            ("GET", "/api/v3/ticker/bookTicker"): m.book_ticker,
            ("GET", "/api/v3/avgPrice"): m.avg_price,
            ("GET", "/api/v3/depth"): m.depth,
        }
        e = self.engine
        self.signed_routes: dict[tuple[str, str], Route] = {
            ("GET", "/api/v3/account"): e.account,
            ("POST", "/api/v3/order"): e.create,
            ("POST", "/api/v3/order/test"): lambda p, now: e.create(p, now, test=True),
            ("GET", "/api/v3/order"): e.get_order,
            ("DELETE", "/api/v3/order"): e.cancel,
            ("GET", "/api/v3/openOrders"): e.open_orders,
            ("DELETE", "/api/v3/openOrders"): e.cancel_all,
            ("GET", "/api/v3/allOrders"): e.all_orders,
            ("GET", "/api/v3/myTrades"): e.my_trades,
            # ccxt asks for margin pairs whenever it holds keys; the emulator offers no margin.
            ("GET", "/sapi/v1/margin/allPairs"): lambda p, now: [],
            ("GET", "/sapi/v1/margin/isolated/allPairs"): lambda p, now: [],
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ExchangeSim:
        if self._server is not None:
            return self
        handler = type("SimHandler", (_Handler,), {"sim": self})
        self._stopping.clear()
        self._server = ThreadingHTTPServer((self._host, self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="exchange-sim", daemon=True
        )
        self._thread.start()
        log.info(
            "exchange emulator listening",
            url=self.url,
            symbol=self.symbol,
            timeframe=self.series.timeframe,
            candles=len(self.series),
        )
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a timeout/latency fault
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        log.info("exchange emulator stopped")

    def __enter__(self) -> ExchangeSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(
                "the exchange emulator is not started; use it as a context manager or call start()"
            )
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # -- what tests inspect ------------------------------------------------------------------
    def orders(self) -> list[dict[str, Any]]:
        """Every order ever placed, oldest first, as GET /api/v3/order shows it."""
        with self._lock:
            return [o.json(self.market.symbol_id) for o in self.engine.orders]

    def trades(self) -> list[dict[str, Any]]:
        """Every fill, oldest first, as GET /api/v3/myTrades shows it."""
        with self._lock:
            return [t.json(self.market.symbol_id) for t in self.engine.trades]

    def balances(self) -> dict[str, float]:
        """Total (free + locked) per asset, the same shape as the ``balances`` argument."""
        with self._lock:
            return {
                a: float(self.engine.free[a] + self.engine.locked[a])
                for a in sorted(self.engine.free)
            }

    def balance_detail(self) -> dict[str, dict[str, float]]:
        """{asset: {"free", "locked"}} as the account endpoint reports them."""
        with self._lock:
            return {
                a: {"free": float(self.engine.free[a]), "locked": float(self.engine.locked[a])}
                for a in sorted(self.engine.free)
            }

    def _persist(self) -> None:
        if self.state_file is not None:
            save_state(self.state_file, {"clock_ms": self.clock.now_ms(), **self.engine.state()})

    # -- request handling --------------------------------------------------------------------
    def dispatch(
        self, method: str, path: str, query: str, body: str, headers: Any
    ) -> tuple[int, Any]:
        """Route one request; returns (HTTP status, JSON-able payload)."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        now = self.clock.now_ms()
        if not self._warned_end and now >= self.series.last_ms + self.series.tf_ms:
            self._warned_end = True
            log.warning(
                "emulator clock is past the last candle; prices stay at its close",
                last_candle_ms=self.series.last_ms,
                now_ms=now,
            )
        key = (method, path)
        try:
            with self._lock:
                if key in self.public_routes:
                    return 200, self.public_routes[key](params, now)
                if key in self.signed_routes:
                    self.auth.check(headers, query, body, params)
                    self.engine.tick(now)
                    return 200, self.signed_routes[key](params, now)
        except ApiError as exc:
            log.info("request refused", method=method, path=path, code=exc.code, msg=exc.msg)
            return exc.status, exc.body()
        except Exception:  # noqa: BLE001 - a bug in the emulator must not look like a network fault
            log.exception("emulator error", method=method, path=path)
            return 500, {
                "code": -1000,
                "msg": "An unknown error occurred while processing the request.",
            }
        log.warning("unsupported endpoint", method=method, path=path)
        return 404, None

    def record(self, method: str, path: str, params: dict[str, str]) -> int:
        """Remember the request; returns the request count of the last minute (Binance's weight)."""
        wall = time.monotonic()
        with self._lock:
            self.requests.append((method, path, params))
            self._recent.append(wall)
            while self._recent and self._recent[0] < wall - 60:
                self._recent.popleft()
            return len(self._recent)

    def sleep(self, ms: int) -> None:
        self._stopping.wait(ms / 1000.0)


class _Handler(BaseHTTPRequestHandler):
    sim: ExchangeSim
    protocol_version = "HTTP/1.0"  # one request per connection: a reset fault hits exactly one
    server_version = "chartrl-exchange-sim"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The path only: query strings carry signatures and are recorded in sim.requests anyway.
        log.debug("http", method=self.command, path=urlsplit(self.path).path, status=code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http", line=format % args)

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        params = {
            k: v
            for k, v in parse_qsl(
                split.query + ("&" + body if body else ""), keep_blank_values=True
            )
            if k != "signature"
        }
        sim = self.sim
        self.weight = sim.record(method, split.path, params)
        fault = sim.faults.pick(method, split.path)
        if fault is None:
            self._respond(*sim.dispatch(method, split.path, split.query, body, self.headers))
            return
        self._apply(fault, method, split.path, split.query, body)

    def _apply(self, fault: Fault, method: str, path: str, query: str, body: str) -> None:
        sim, kind = self.sim, fault.kind
        if kind == "latency":
            sim.sleep(int(fault.ms or 0))
            self._respond(*sim.dispatch(method, path, query, body, self.headers))
        elif kind == "timeout":
            # The answer comes too late either way; the request lands at once (process=True) or
            # only after the wait, when the client may already be looking for it.
            result = (
                sim.dispatch(method, path, query, body, self.headers) if fault.process else None
            )
            sim.sleep(int(fault.ms or 0))
            self._respond(*(result or sim.dispatch(method, path, query, body, self.headers)))
        elif kind == "reset":
            self._reset()
        elif kind == "drop_response":
            sim.dispatch(method, path, query, body, self.headers)
            self._reset()
        else:
            if fault.process:
                sim.dispatch(method, path, query, body, self.headers)
            status = int(kind)
            if status in (429, 418):
                msg = (
                    "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. Please use the websocket for live updates to avoid polling the API."
                    if status == 429
                    else "Way too much request weight used; IP banned until 0. Please use the websocket for live updates to avoid bans."
                )
                self._respond(
                    status, {"code": -1003, "msg": msg}, {"Retry-After": str(fault.retry_after)}
                )
            else:
                self._respond(
                    status,
                    _ERROR_PAGE.get(status, f"{status} Error"),
                    {"Retry-After": str(fault.retry_after)} if status == 503 else None,
                )

    def _respond(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if status == 404 and payload is None:
            data, ctype = b"Not Found", "text/plain"
        elif isinstance(payload, str):
            data, ctype = f"<html><body><h1>{payload}</h1></body></html>".encode(), "text/html"
        else:
            data, ctype = (
                json.dumps(payload, separators=(",", ":")).encode(),
                "application/json;charset=UTF-8",
            )
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-MBX-USED-WEIGHT-1M", str(getattr(self, "weight", 1)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (e.g. after a timeout fault): nothing to tell it

    def _reset(self) -> None:
        """Abort the connection: SO_LINGER 0 makes close() send a TCP RST instead of a FIN."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
