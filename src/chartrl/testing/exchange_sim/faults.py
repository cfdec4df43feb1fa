"""Fault injection: which requests fail, how, and how often.

A rule matches a request by path (a glob such as ``/api/v3/klines`` or ``*/order``) and
optionally method; it fires ``count`` times (None = forever), each time with ``probability``
(None = always). Kinds:

- ``429`` / ``418``: rate limited / IP banned, with ``Retry-After`` and Binance's -1003 body.
- ``500`` / ``503``: a gateway error page (no JSON), which ccxt reads as ExchangeNotAvailable.
- ``timeout``: wait ``ms`` (default 15 s, past any sane client timeout), then execute the request
  and answer (too late: the request lands after the client gave up); with ``process=True`` it is
  executed before the wait instead.
- ``reset``: close the connection with a TCP RST without answering (request not processed).
- ``latency``: wait ``ms`` (default 500), then answer normally.
- ``drop_response``: process the request (an order IS placed), then close without answering.

``process=True`` on 429/418/500/503/timeout executes the request before the error, which is how
an exchange leaves a submit ambiguous. Every fault that fires is logged and recorded.
"""

from __future__ import annotations

import fnmatch
import random
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chartrl.errors import ConfigError
from chartrl.logs import get_logger

KINDS = ("429", "418", "500", "503", "timeout", "reset", "latency", "drop_response")
_DEFAULT_MS = {"timeout": 15_000, "latency": 500}
_FIELDS = {"path", "kind", "count", "probability", "method", "ms", "retry_after", "process"}

log = get_logger("chartrl.exchange_sim.faults")


@dataclass
class Fault:
    path: str
    kind: str
    count: int | None = 1
    probability: float | None = None
    method: str | None = None
    ms: int | None = None
    retry_after: int = 1
    process: bool = False
    fired: int = 0

    def __post_init__(self) -> None:
        self.kind = str(self.kind)
        if self.kind not in KINDS:
            raise ConfigError(
                f"fault kind {self.kind!r} for path {self.path!r} is unknown; use one of {', '.join(KINDS)}"
            )
        if self.count is not None and self.count < 0:
            raise ConfigError(
                f"fault count for {self.path!r} must be >= 0 or None (forever), got {self.count}"
            )
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ConfigError(
                f"fault probability for {self.path!r} must be within 0..1, got {self.probability}"
            )
        if self.ms is None:
            self.ms = _DEFAULT_MS.get(self.kind, 0)
        if self.method is not None:
            self.method = self.method.upper()

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return fnmatch.fnmatchcase(path, self.path)

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count


@dataclass(frozen=True)
class FiredFault:
    """One injected fault, for tests to assert on."""

    kind: str
    method: str
    path: str


@dataclass
class FaultPlan:
    """The emulator's fault rules (``sim.faults``); safe to change while the server runs."""

    seed: int = 0
    rules: list[Fault] = field(default_factory=list)
    injected: list[FiredFault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)

    def add(
        self,
        path_pattern: str,
        kind: str,
        count: int | None = 1,
        probability: float | None = None,
        *,
        method: str | None = None,
        ms: int | None = None,
        retry_after: int = 1,
        process: bool = False,
    ) -> Fault:
        fault = Fault(path_pattern, str(kind), count, probability, method, ms, retry_after, process)
        with self._lock:
            self.rules.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def pick(self, method: str, path: str) -> Fault | None:
        """The first live rule matching this request that decides to fire (consumes one count)."""
        with self._lock:
            for fault in self.rules:
                if fault.exhausted or not fault.matches(method, path):
                    continue
                if fault.probability is not None and self._rng.random() >= fault.probability:
                    continue
                fault.fired += 1
                self.injected.append(FiredFault(fault.kind, method, path))
                log.warning(
                    "fault injected",
                    kind=fault.kind,
                    method=method,
                    path=path,
                    fired=fault.fired,
                    count=fault.count,
                )
                return fault
        return None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "faults") -> FaultPlan:
        """``{"seed": 1, "fault": [{"path": "/api/v3/klines", "kind": "429", "count": 2}, ...]}``."""
        try:
            plan = cls(seed=_typed(data, "seed", int, 0))
        except ValueError as exc:
            raise ConfigError(str(exc), source) from None
        entries = data.get("fault", data.get("faults", []))
        if not isinstance(entries, list):
            raise ConfigError("'fault' must be a list of tables ([[fault]] in TOML)", source)
        problems: list[str] = []
        for n, entry in enumerate(entries, 1):
            if not isinstance(entry, dict):
                problems.append(f"fault #{n}: must be a table ([[fault]]) with path and kind")
                continue
            missing = [k for k in ("path", "kind") if k not in entry]
            if missing:
                problems.append(
                    f"fault #{n}: missing {' and '.join(missing)}; every fault needs path and kind"
                )
                continue
            unknown = set(entry) - _FIELDS
            if unknown:
                problems.append(
                    f"fault #{n}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}"
                )
                continue
            try:
                count = entry.get("count", 1)
                plan.add(
                    str(entry["path"]),
                    str(entry["kind"]),
                    None if count in (None, "forever", -1) else _typed(entry, "count", int, 1),
                    _typed(entry, "probability", float, None),
                    method=entry.get("method"),
                    ms=_typed(entry, "ms", int, None),
                    retry_after=_typed(entry, "retry_after", int, 1),
                    process=_typed(entry, "process", bool, False),
                )
            except ConfigError as exc:
                problems.extend(f"fault #{n}: {p}" for p in exc.problems)
            except (TypeError, ValueError) as exc:
                problems.append(f"fault #{n}: {exc}")
        if problems:
            raise ConfigError(problems, source)
        return plan

    @classmethod
    def from_file(cls, path: str | Path) -> FaultPlan:
        """A TOML file of ``[[fault]]`` tables (or a JSON file with the same shape)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read fault file: {exc.strerror}", str(p)) from None
        except UnicodeDecodeError:
            raise ConfigError("not a text file; expected TOML [[fault]] tables", str(p)) from None
        try:
            if p.suffix == ".json":
                import json

                data = json.loads(text)
            else:
                data = tomllib.loads(text)
        except ValueError as exc:
            raise ConfigError(
                f"not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {exc}", str(p)
            ) from None
        return cls.from_dict(data, str(p))


def _typed(entry: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """``entry[key]`` as ``kind``; a value of another type is refused naming the field, not coerced."""
    value = entry.get(key, default)
    if value is None or value is default:
        return value
    if kind is bool:
        ok = isinstance(value, bool)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        ok = False
    else:
        ok = kind is float or float(value).is_integer()
    if not ok:
        want = {bool: "true or false", int: "a whole number", float: "a number"}[kind]
        raise ValueError(f"{key} = {value!r} must be {want}")
    return kind(value)
