"""Binance REST conventions the emulator shares: error replies, number formatting, parameters.

Binance answers an error with an HTTP status and a JSON body ``{"code": -NNNN, "msg": "..."}``;
ccxt maps the code (and sometimes the message) to its exception classes, so both must be exact.
"""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

_NUMBER = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")


class ApiError(Exception):
    """An error reply: HTTP ``status`` with Binance's ``{"code", "msg"}`` body."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def mandatory(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise ApiError(
            400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return value


def decimal_param(params: dict[str, str], name: str, required: bool = False) -> Decimal | None:
    """A decimal parameter as Binance validates it (plain digits, no sign, no exponent)."""
    raw = mandatory(params, name) if required else params.get(name)
    if raw is None or raw == "":
        return None
    if not _NUMBER.match(raw):
        raise ApiError(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.",
        )
    try:
        return Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the pattern already excludes it
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None


def int_param(
    params: dict[str, str], name: str, default: int | None = None, required: bool = False
) -> int | None:
    raw = mandatory(params, name) if required else params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        ) from None


def limit_param(params: dict[str, str], default: int, maximum: int) -> int:
    limit = int_param(params, "limit", default)
    assert limit is not None
    if limit < 1 or limit > maximum:
        raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return limit


EIGHT = Decimal("0.00000001")


def fmt(value: Decimal | float | int) -> str:
    """Binance prints amounts and prices with 8 decimals, as strings."""
    return format(Decimal(str(value)).quantize(EIGHT, rounding=ROUND_DOWN), "f")


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """Round down to a multiple of ``step`` (never more than asked for or owned)."""
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step
