"""``--spec FILE``: a sweep written down as TOML, with the fields of the command line.

```toml
strategies = ["cnn", "cnnrnn", "gru"]
seeds = 5
folds = 4
search = "grid"            # or "optuna", with trials = N
params = ["norm=group,layer", "learning_rate=1e-4:1e-3:log"]
cpus_per_trial = 1
gpus_per_trial = 0
max_failures = 1
address = "auto"           # leave out for an embedded Ray on this machine

[series]                   # which candles, as --exchange/--symbol/--timeframe/--from/--until
symbol = "BTC/USDT"        # or series = ["binance:BTC/USDT:1h", "binance:ETC/BTC:1h"]: the
until = "2021-06-10"       # first is judged, the rest add training candles (as --series)

[train]                    # TrainConfig fields given to every trial (as the training options)
epochs = 3
imitation_epochs = 1
```
An option on the command line wins over the file. Unknown keys, and values of the wrong type or
out of their range, are refused in one line naming the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from chartrl.errors import UsageError

# key -> (type, argparse attribute)
TOP: dict[str, tuple[type | tuple[type, ...], str]] = {
    "strategies": (list, "strategies"),
    "seeds": (int, "seeds"),
    "folds": (int, "folds"),
    "search": (str, "search"),
    "trials": (int, "trials"),
    "params": (list, "param"),
    "cpus_per_trial": ((int, float), "cpus_per_trial"),
    "gpus_per_trial": ((int, float), "gpus_per_trial"),
    "max_failures": (int, "max_failures"),
    "address": (str, "address"),
    "reference": (str, "reference"),
}
SERIES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "exchange": (str, "exchange"),
    "symbol": (str, "symbol"),
    "timeframe": (str, "timeframe"),
    "data_dir": (str, "data_dir"),
    "from": (str, "date_from"),
    "until": (str, "date_until"),
    "synthetic": (int, "synthetic"),
    "series": ((str, list), "series"),
    "series_weights": ((str, list), "series_weights"),
}


def read_spec(path: Path) -> dict[str, Any]:
    """The TOML file as a dict (UsageError naming the file when it is unreadable)."""
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"--spec {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--spec {path}: not valid TOML ({exc})") from None


def _typed(path: Path, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UsageError(f"--spec {path}: {key} must be a {names}, got {value!r}")
    return value


def train_fields(path: Path, table: dict[str, Any]) -> dict[str, Any]:
    """The [train] table as TrainConfig fields, each checked as a --param value would be."""
    from chartrl.experiments.params import _check_rule, _field_types

    types = _field_types()
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name == "policy_kwargs" and isinstance(value, dict):
            out[name] = value
            continue
        if name == "stages" and isinstance(value, list):
            out[name] = tuple(value)
            continue
        if name not in types or name in ("seed", "validation_fraction"):
            raise UsageError(f"--spec {path}: [train] {key} is not a training field set per sweep")
        kind = float if types[name][0] is float else types[name][0]
        value = float(value) if kind is float and isinstance(value, int) else value
        _check_rule(name, _typed(path, f"[train] {key}", value, kind))
        out[name] = value
    return out


def apply_spec(args: Any, path: Path) -> dict[str, Any]:
    """Fill the options not given on the command line from the spec file; its [train] fields."""
    spec = read_spec(path)
    for key, value in spec.items():
        if key in ("series", "train"):
            continue
        if key not in TOP:
            raise UsageError(
                f"--spec {path}: unknown key {key!r}; use {', '.join([*TOP, 'series', 'train'])}"
            )
        kind, attr = TOP[key]
        _typed(path, key, value, kind)
        if key == "strategies":
            value = ",".join(map(str, value))
        current = getattr(args, attr, None)
        if current is None or current == []:
            setattr(args, attr, value)
    series = spec.get("series") or {}
    for key, value in series.items():
        if key not in SERIES:
            raise UsageError(
                f"--spec {path}: unknown [series] key {key!r}; use {', '.join(SERIES)}"
            )
        kind, attr = SERIES[key]
        if getattr(args, attr, None) is None:
            value = _typed(path, key, value, kind)
            if isinstance(value, list):  # series = ["binance:BTC/USDT:1h", ...], weights = [2, 1]
                value = ",".join(f"{v:g}" if isinstance(v, int | float) else str(v) for v in value)
            setattr(args, attr, Path(value) if attr == "data_dir" else value)
    return train_fields(path, spec.get("train") or {})
