"""The console's HTTP application: the JSON API, ``/metrics``, ``/healthz`` and the dashboard.

Every error is one JSON line ``{"error": "..."}`` that names what was wrong (a parameter, the
token, a missing chart), never a traceback; a bad parameter is a 422 that names the field.
Everything but ``/healthz``, the login page and its static files needs the bearer token.
"""

from __future__ import annotations

import functools
import gzip
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from chartrl.config.settings import Settings
from chartrl.console.auth import token_matches
from chartrl.console.data import ConsoleData
from chartrl.console.metrics import make_registry
from chartrl.errors import ChartrlError, UsageError
from chartrl.logs import get_logger, one_line_error

log = get_logger("chartrl.console")
STATIC = Path(str(resources.files("chartrl.console") / "static"))
PLOTLY_JS = "plotly-finance-3.7.0.min.js"
"""plotly.js's "finance" partial bundle (scatter, bar, candlestick, ohlc, ...), vendored from npm
``plotly.js-finance-dist-min@3.7.0`` (MIT, its licence beside it): 1.2 MB against the full bundle's
4.8 MB, which took most of the first render parsing code for maps, 3-D and WebGL the page never
draws. Same plotly.js version as the full bundle the ``plotly`` package ships (report.html)."""
PLOTLY_JS_SHA256 = "43a1dc8250184c2805c791ff52463a460f5ce7252d10afa9f51bab4a2587c4c0"
"""Of ``PLOTLY_JS`` as npm ships it (tarball integrity sha512-pvq/ip9CFjeYK1w/3v8Cro...)."""
# The versioned name changes with the file, so browsers may keep it for good; the page and its own
# script and style change with the package, so those are revalidated (ETag) on every load.
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
REVALIDATE = {"Cache-Control": "no-cache"}


@functools.cache
def _gzipped(path: Path) -> bytes:
    # 1.2 MB: compressed once, not per request as GZipMiddleware would (the box also trades).
    return gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)


def warm_static() -> None:
    """Compress plotly.js before the first browser asks for it (``Console`` calls this)."""
    _gzipped(STATIC / PLOTLY_JS)


class _Masked(JSONResponse):
    """JSON with this console's secrets (the token, the exchange keys) masked wherever they appear,
    a halt reason typed by an operator included: no secret ever leaves in a response."""

    secrets: tuple[str, ...] = ()

    def render(self, content: Any) -> bytes:
        body = super().render(content)
        for secret in self.secrets:
            body = body.replace(secret.encode(), b"***")
        return body


class HaltRequest(BaseModel):
    reason: str = Field("halted from the console", min_length=1, max_length=200)


def _when(value: str | None, field: str) -> int | None:
    from chartrl.cli.app import parse_date

    try:
        dt = parse_date(value, field)
    except UsageError as exc:
        raise HTTPException(422, f"query parameter {exc}") from None
    return None if dt is None else int(dt.timestamp() * 1000)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where = {"query": "query parameter", "body": "body field", "path": "path parameter"}.get(
            loc[0] if loc else "", "field"
        )
        name = ".".join(loc[1:]) or "(the body)"
        got = err.get("input")
        shown = f" (got {got!r})" if isinstance(got, (str, int, float)) else ""
        parts.append(f"{where} {name}: {err.get('msg', 'invalid')}{shown}")
    return "; ".join(parts)


def create_app(settings: Settings, token: str) -> FastAPI:
    """The console over ``settings``' data dir; ``token`` is the bearer token every caller needs."""
    data = ConsoleData(settings)
    registry = make_registry(data)
    keys = (settings.exchange.api_key, settings.exchange.api_secret)
    secrets = tuple(
        x for x in (token, *(k.get_secret_value() for k in keys if k is not None)) if len(x) >= 4
    )
    masked = type("MaskedJSON", (_Masked,), {"secrets": secrets})
    app = FastAPI(
        default_response_class=masked,
        title="chartrl console",
        description="The trading daemon's book, decisions, model and halts (read-only, "
        "except the halt endpoints). Send `Authorization: Bearer <console.token>`.",
        version=_version(),
    )
    # Level 5: most of level 9's saving on JSON for a fraction of its CPU (the box also trades).
    app.add_middleware(GZipMiddleware, minimum_size=2048, compresslevel=5)

    def authorised(request: Request) -> None:
        if not token_matches(token, request.headers.get("authorization")):
            raise HTTPException(
                401,
                "a valid bearer token is needed: send Authorization: Bearer <console.token>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    auth = [Depends(authorised)]

    @app.middleware("http")
    async def _log_request(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        response = await call_next(request)
        # The path only: the token travels in a header, and a query string is the client's business.
        log.info(
            "http_request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            ms=round((time.perf_counter() - t0) * 1000, 2),
        )
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return masked({"error": _validation_message(exc)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such page; the API is listed at /docs"
        return masked(
            {"error": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    # A ChartrlError (no ledger yet, a data dir being written) is the operator's 503, answered by
    # Starlette's exception middleware: one log line, no traceback. Only a true bug reaches the
    # Exception handler, which Starlette re-raises after answering (a traceback in the journal).
    @app.exception_handler(ChartrlError)
    async def _unavailable(request: Request, exc: ChartrlError) -> JSONResponse:
        text = one_line_error(exc, 300)
        log.warning("http_unavailable", path=request.url.path, error=text)
        return masked({"error": text}, status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        text = one_line_error(exc, 300)
        log.error("http_error", path=request.url.path, error=text)
        return masked({"error": text}, status_code=500)

    @app.get("/healthz", summary="200 while the last tick is younger than two timeframes")
    def healthz() -> JSONResponse:
        ok, reason, facts = data.health()
        return masked({"ok": ok, "reason": reason, **facts}, status_code=200 if ok else 503)

    @app.get("/api/status", dependencies=auth, summary="What `chartrl status` shows")
    def status() -> dict[str, Any]:
        return data.status()

    @app.get(
        "/api/equity", dependencies=auth, summary="Equity and buy-and-hold over the book's life"
    )
    def equity(
        start: Annotated[str | None, Query(alias="from", description="ISO 8601, UTC")] = None,
        end: Annotated[str | None, Query(alias="to", description="ISO 8601, UTC")] = None,
        points: Annotated[
            int | None,
            Query(
                ge=8,
                le=1_000_000,
                description="at most this many points: in each bucket, the min and max of every "
                "line are kept (no drawdown is hidden); every decided candle when absent",
            ),
        ] = None,
    ) -> dict[str, Any]:
        lo, hi = _when(start, "from"), _when(end, "to")
        if lo is not None and hi is not None and hi < lo:
            raise HTTPException(422, f"query parameter to {end!r} is before from {start!r}")
        return data.equity(lo, hi, points)

    @app.get("/api/trades", dependencies=auth, summary="The book's fills, newest first")
    def trades(limit: Annotated[int, Query(ge=1, le=100_000)] = 500) -> list[dict[str, Any]]:
        return data.trades(limit)

    @app.get(
        "/api/decisions",
        dependencies=auth,
        summary="Decisions, newest first: action, Q values, risk verdict, fill",
    )
    def decisions(limit: Annotated[int, Query(ge=1, le=100_000)] = 100) -> list[dict[str, Any]]:
        return data.decisions(limit)

    @app.get("/api/model", dependencies=auth, summary="The champion, lineage, training, skill")
    def model() -> dict[str, Any]:
        return data.model()

    @app.get("/api/retrains", dependencies=auth, summary="Retrain cycles, newest first")
    def retrains(limit: Annotated[int, Query(ge=1, le=10_000)] = 50) -> list[dict[str, Any]]:
        return data.retrains(limit)

    @app.get("/api/halts", dependencies=auth, summary="Halts in force and the recent ones")
    def halts() -> dict[str, Any]:
        return data.halts()

    @app.post("/api/halt", dependencies=auth, summary="Halt trading (as `chartrl halt set`)")
    def halt(request: Request, body: HaltRequest | None = None) -> dict[str, Any]:
        from chartrl.cli.halt_cmd import halt as set_halt

        reason = (body or HaltRequest()).reason
        hid = set_halt(settings, _source(request), reason)
        log.warning("console_halt", halt_id=hid, reason=reason, source=_source(request))
        return {"halted": True, "id": hid, "reason": reason}

    @app.post("/api/halt/clear", dependencies=auth, summary="Resume (as `chartrl halt clear`)")
    def clear(request: Request) -> dict[str, Any]:
        from chartrl.cli.halt_cmd import resume

        lines = resume(settings, _source(request))
        log.warning("console_halt_cleared", source=_source(request), done=lines)
        return {"halted": data.halts()["halted"], "done": lines}

    @app.get(
        "/api/candles", dependencies=auth, summary="The last stored candles of the book's series"
    )
    def candles(limit: Annotated[int, Query(ge=10, le=20_000)] = 300) -> dict[str, Any]:
        from chartrl.console.chart import recent_candles

        ser = data.series()
        try:
            return recent_candles(settings, ser.symbol, ser.timeframe, limit)
        except ChartrlError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get(
        "/api/chart/latest.png",
        dependencies=auth,
        summary="The chart tensor the model decided on at the last tick, upscaled",
        response_class=Response,
    )
    def chart() -> Response:
        from chartrl.console.chart import latest_chart_png

        ser = data.series()
        last = data.decisions(1)
        if not last:
            raise HTTPException(404, "no decision recorded yet, so no chart to show")
        candle_ms = _when(last[0]["candle"], "candle")
        try:
            png = latest_chart_png(settings, ser.symbol, candle_ms or 0, ser.timeframe)
        except ChartrlError as exc:
            raise HTTPException(404, f"cannot draw the last chart: {exc}") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/metrics", dependencies=auth, summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=REVALIDATE)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str, request: Request) -> Response:
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        if name not in files:
            raise HTTPException(404, f"no static file {name!r}")
        if name != PLOTLY_JS:
            return FileResponse(files[name], headers=REVALIDATE)
        if "gzip" not in request.headers.get("accept-encoding", ""):
            return FileResponse(files[name], media_type="text/javascript", headers=IMMUTABLE)
        headers = IMMUTABLE | {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return Response(_gzipped(files[name]), media_type="text/javascript", headers=headers)

    return app


def _source(request: Request) -> str:
    host = request.client.host if request.client else "unknown"
    return f"console:{host}"


def _version() -> str:
    from chartrl import __version__

    return __version__
