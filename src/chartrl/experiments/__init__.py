"""Experiments of many training runs on Ray Tune: ``chartrl sweep`` and ``chartrl compare``.

Strategies x searched configurations x seeds x walk-forward folds, each unit a Tune trial that
trains with ``chartrl.train``, lets its fold's validation range choose the checkpoint and is
judged by ``chartrl.backtest`` on the fold's test range. Modules: ``params`` (--param),
``spec`` (--spec TOML), ``folds`` (the layout), ``plan`` (what DIR stores), ``trainable`` (one
unit), ``sweep`` (the driver), ``progress`` (the live table), ``results`` (results.csv); the
statistics and the report (``stats``, ``pbo``, ``report``) read what those write. See
docs/experiments.md.
"""
