"""The SQLite ledger: schema, migrations with backup, idempotent fills, concurrent readers, state blobs."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from chartrl.account.ledger import Ledger
from chartrl.account.ledger_conn import ledger_path
from chartrl.account.migrations import MIGRATIONS, backup_path
from chartrl.errors import ChartrlError


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "ledger.sqlite")
    yield led
    led.close()


def test_new_ledger_is_wal_and_versioned(ledger: Ledger) -> None:
    assert ledger.schema_version == len(MIGRATIONS)
    mode = sqlite3.connect(ledger.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_ledger_path_is_in_data_dir(tmp_path: Path) -> None:
    assert ledger_path(tmp_path) == tmp_path / "ledger.sqlite"


def test_order_lifecycle_and_unfinished(ledger: Ledger) -> None:
    ledger.create_order("c1", symbol="BTC/USDT", mode="live", side="buy", amount=0.1)
    ledger.create_order("c2", symbol="BTC/USDT", mode="live", side="sell", amount=0.1)
    assert [o.client_order_id for o in ledger.unfinished_orders("live")] == ["c1", "c2"]
    ledger.update_order(
        "c1", state="filled", filled=0.1, average=100.0, cost=10.0, exchange_order_id="9"
    )
    o = ledger.order("c1")
    assert o is not None and o.final and o.closed_ms is not None and o.exchange_order_id == "9"
    assert [o.client_order_id for o in ledger.unfinished_orders("live")] == ["c2"]
    with pytest.raises(ValueError, match="unknown order state"):
        ledger.update_order("c2", state="done")
    with pytest.raises(ChartrlError, match="no order"):
        ledger.update_order("nope", state="filled")
    with pytest.raises(sqlite3.IntegrityError):  # a client id is used once, ever
        ledger.create_order("c1", symbol="BTC/USDT", mode="live", side="buy", amount=0.1)


def test_fill_is_idempotent_on_trade_id(ledger: Ledger) -> None:
    ledger.create_order("c1", symbol="BTC/USDT", mode="live", side="buy", amount=0.1)
    kw = dict(
        client_order_id="c1",
        symbol="BTC/USDT",
        mode="live",
        side="buy",
        price=100.0,
        amount=0.05,
        fee=0.01,
        fee_currency="USDT",
        timestamp_ms=1,
    )
    assert ledger.add_fill(trade_id="t1", **kw) is True
    assert ledger.add_fill(trade_id="t1", **kw) is False
    assert ledger.add_fill(trade_id="t2", **kw) is True
    assert [f.trade_id for f in ledger.fills(client_order_id="c1")] == ["t1", "t2"]


def test_transaction_rolls_back_everything(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError):
        with ledger.transaction():
            ledger.create_order("c1", symbol="BTC/USDT", mode="live", side="buy", amount=0.1)
            ledger.set_halt("manual", "test")
            raise RuntimeError("boom")
    assert ledger.order("c1") is None and ledger.active_halts() == []


def test_halts_set_clear_and_rebaseline_flag(ledger: Ledger) -> None:
    ledger.set_halt("balance_mismatch", "live", "USDT off by 5")
    ledger.set_halt("manual", "cli")
    assert [h.reason for h in ledger.active_halts()] == ["balance_mismatch", "manual"]
    cleared = ledger.clear_halts("operator")
    assert len(cleared) == 2 and ledger.active_halts() == []
    assert ledger.get_flag("live.rebaseline") == "1"
    assert ledger.halts()[0].cleared_by == "operator"


def test_hidden_state_roundtrip_tensor_and_tuple(ledger: Ledger) -> None:
    h = torch.randn(2, 1, 8)
    ledger.save_hidden("BTC/USDT", h, candle_ms=123, model_version="v1")
    got, candle_ms, version = ledger.load_hidden("BTC/USDT")
    assert torch.equal(got, h) and candle_ms == 123 and version == "v1"
    pair = (
        torch.randn(1, 1, 4, dtype=torch.float64),
        torch.arange(6, dtype=torch.int64).reshape(1, 2, 3),
    )
    ledger.save_hidden("ETH/USDT", pair, candle_ms=5)
    got2 = ledger.load_hidden("ETH/USDT")[0]
    assert isinstance(got2, tuple) and all(
        torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(got2, pair, strict=True)
    )
    ledger.save_hidden("X/Y", None, candle_ms=1)
    assert ledger.load_hidden("X/Y")[0] is None
    assert ledger.load_hidden("NONE/USDT") is None


def test_model_versions_and_retrain_results(ledger: Ledger) -> None:
    ledger.record_model_version("BTC/USDT", "abc", "/m/abc")
    ledger.record_model_version("BTC/USDT", "def", "/m/def", {"sharpe": 1.2})
    assert ledger.current_model_version("BTC/USDT")["version"] == "def"
    rid = ledger.start_retrain("abc")
    assert ledger.retrain_results()[0]["status"] == "running"
    ledger.finish_retrain(
        rid, status="promoted", challenger="def", promoted=True, metrics={"sharpe": 1.2}
    )
    r = ledger.retrain_results()[0]
    assert (
        r["promoted"] is True and r["metrics"] == {"sharpe": 1.2} and r["finished_ms"] is not None
    )


def test_day_start_equity_is_first_seen(ledger: Ledger) -> None:
    assert ledger.day_start_equity("2024-01-01", "BTC/USDT", "paper", 100.0) == 100.0
    assert ledger.day_start_equity("2024-01-01", "BTC/USDT", "paper", 90.0) == 100.0
    assert not ledger.day_killed("2024-01-01", "BTC/USDT", "paper")
    ledger.kill_day("2024-01-01", "BTC/USDT", "paper")
    assert ledger.day_killed("2024-01-01", "BTC/USDT", "paper")


def test_migration_backs_up_old_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as led:
        led.set_halt("manual", "test")
    extra = [*MIGRATIONS, ["ALTER TABLE halts ADD COLUMN note TEXT"]]
    with Ledger(path, migrations=extra) as led:
        assert led.schema_version == len(MIGRATIONS) + 1
        assert led.active_halts()[0].reason == "manual"  # data kept
    bak = backup_path(path, len(MIGRATIONS))
    assert bak.is_file()
    assert sqlite3.connect(bak).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    # An older chartrl refuses the newer ledger instead of misreading it.
    with pytest.raises(ChartrlError, match="newer than this chartrl"):
        Ledger(path)


def test_failed_migration_keeps_old_version(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    bad = [*MIGRATIONS, ["CREATE TABLE t (x)", "THIS IS NOT SQL"]]
    with pytest.raises(sqlite3.OperationalError):
        Ledger(path, migrations=bad)
    with Ledger(path) as led:
        assert led.schema_version == len(MIGRATIONS)
        assert not led._query("SELECT name FROM sqlite_master WHERE name = 't'")


def test_foreign_sqlite_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE x (a)")
    with pytest.raises(ChartrlError, match="not a chartrl ledger"):
        Ledger(path)


def test_readonly_reader_while_writer_holds_transaction(tmp_path: Path) -> None:
    """`chartrl status` reads while the daemon is mid-write (WAL): it sees the last commit, no lock error."""
    path = tmp_path / "ledger.sqlite"
    writer = Ledger(path)
    writer.set_halt("manual", "first")
    script = textwrap.dedent(f"""
        from chartrl.account.ledger import Ledger
        led = Ledger({str(path)!r}, readonly=True)
        print(len(led.active_halts()))
    """)
    with writer.transaction():
        writer.set_halt("manual", "uncommitted")
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    writer.close()


def test_readonly_missing_ledger_is_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ChartrlError, match="no ledger"):
        Ledger(tmp_path / "missing.sqlite", readonly=True)


def test_hidden_state_zero_dim_and_empty(ledger: Ledger) -> None:
    for h in (torch.tensor(1.5), torch.zeros(0, 3), torch.ones(2, 2, dtype=torch.bfloat16)):
        ledger.save_hidden("BTC/USDT", h, candle_ms=1)
        got = ledger.load_hidden("BTC/USDT")[0]
        assert got.shape == h.shape and got.dtype == h.dtype and torch.equal(got, h)
