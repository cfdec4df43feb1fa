"""Signed-endpoint checks as Binance makes them: API key header, HMAC-SHA256 signature, timestamp.

The signature covers the query string followed by the body, exactly as sent, minus the
``signature`` parameter. The timestamp must fall within ``recvWindow`` (default 5000 ms, at most
60000) of the server's time and not more than 1000 ms ahead of it. The emulator's clock usually
runs in the past (replayed history) while a client stamps requests with its wall clock, so a
timestamp is accepted when it is close to either the wall clock or the emulated clock.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

from chartrl.testing.exchange_sim.protocol import ApiError, int_param, mandatory


def _strip_signature(raw: str) -> tuple[str, str | None]:
    kept, signature = [], None
    for part in raw.split("&") if raw else []:
        if part.startswith("signature="):
            signature = part[len("signature=") :]
        else:
            kept.append(part)
    return "&".join(kept), signature


class Auth:
    def __init__(self, api_key: str, api_secret: str, sim_now: Callable[[], int]) -> None:
        self.api_key = api_key
        self._secret = api_secret.encode()
        self._sim_now = sim_now

    def check(
        self, headers: Mapping[str, str], query: str, body: str, params: dict[str, str]
    ) -> None:
        key = headers.get("X-MBX-APIKEY")
        if not key:
            raise ApiError(401, -2014, "API-key format invalid.")
        if not hmac.compare_digest(key, self.api_key):
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        q, sig_q = _strip_signature(query)
        b, sig_b = _strip_signature(body)
        signature = sig_q or sig_b
        if not signature:
            mandatory(params, "signature")
        expected = hmac.new(self._secret, (q + b).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(signature).lower()):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        timestamp = int_param(params, "timestamp", required=True)
        recv_window = int_param(params, "recvWindow", 5000)
        assert timestamp is not None and recv_window is not None
        if recv_window > 60_000 or recv_window <= 0:
            raise ApiError(400, -1131, "recvWindow must be less than 60000")
        if not any(
            self._fresh(timestamp, recv_window, now)
            for now in (int(time.time() * 1000), self._sim_now())
        ):
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    @staticmethod
    def _fresh(timestamp: int, recv_window: int, now: int) -> bool:
        return timestamp < now + 1000 and now - timestamp <= recv_window
