"""The operator's console: a JSON API, a dashboard and Prometheus metrics over a data dir.

Read-only (the ledger is opened with SQLite ``mode=ro``), except the halt endpoints, which run the
code of ``chartrl halt``. See docs/console.md.
"""
