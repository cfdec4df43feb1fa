"""Searched hyperparameters: ``--param NAME=SPEC`` parsed, checked against TrainConfig, expanded.

A SPEC is a choice list (``norm=group,layer``) or a range ``LO:HI[:SCALE[:POINTS]]`` with SCALE
``linear`` (default) or ``log`` (``learning_rate=1e-4:1e-3:log``). Under ``--search optuna`` a
range is sampled continuously (an integer field: integers); under ``--search grid`` it becomes
POINTS values spaced by its scale (default 3, the ends included). Names must be TrainConfig
fields (hyphens allowed), values their type and, where the ``train`` command checks an option,
that option's rule: a bad name, value or range is a one-line UsageError naming it, raised before
anything starts.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, fields
from typing import Any

from chartrl.errors import UsageError

GRID_POINTS = 3
"""Values a range gives under --search grid when it names no POINTS."""
# Swept by --seeds / the folds, or not one value: never a --param.
_NOT_SEARCHABLE = {
    "seed": "--seeds",
    "stages": "--stages",
    "policy_kwargs": "a TOML spec's [train] table",
    "validation_fraction": "--folds (the folds set the split)",
}
# Rules of the fields `train` has no option for (OPTIONS has the others).
_RULES: dict[str, tuple[Any, str]] = {
    "learning_rate": (lambda v: v > 0, "> 0"),
    "imitation_lr": (lambda v: v > 0, "> 0"),
    "gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "eps_start": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "eps_end": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "max_grad_norm": (lambda v: v > 0, "> 0"),
    "reward_scale": (lambda v: v > 0, "> 0"),
    "burn_in": (lambda v: v >= 0, ">= 0"),
    **{
        k: (lambda v: v >= 1, ">= 1")
        for k in (
            "batch_size",
            "seq_len",
            "buffer_size",
            "target_network_frequency",
            "train_frequency",
        )
    },
}


@dataclass(frozen=True)
class Param:
    """One searched TrainConfig field."""

    name: str
    kind: type
    """int, float, str or bool: the field's type."""
    choices: tuple[Any, ...] = ()
    """A choice list (empty for a range)."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    points: int = GRID_POINTS

    @property
    def is_range(self) -> bool:
        return not self.choices

    def grid(self) -> list[Any]:
        """The values --search grid tries."""
        if not self.is_range:
            return list(self.choices)
        lo, hi, n = float(self.low), float(self.high), self.points  # type: ignore[arg-type]
        if self.log:
            vals = [
                math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / (n - 1))
                for i in range(n)
            ]
        else:
            vals = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
        if self.kind is int:
            return list(dict.fromkeys(int(round(v)) for v in vals))
        return [float(f"{v:.6g}") for v in vals]  # 0.000316228, not 0.00031622776601683794

    def tune_domain(self) -> Any:
        """The Ray Tune search domain (what Optuna samples from)."""
        from ray import tune

        if not self.is_range:
            return tune.choice(list(self.choices))
        if self.kind is int:
            lo, hi = int(self.low), int(self.high)  # type: ignore[arg-type]
            return tune.lograndint(lo, hi + 1) if self.log else tune.randint(lo, hi + 1)
        return (
            tune.loguniform(self.low, self.high) if self.log else tune.uniform(self.low, self.high)
        )


def _field_types() -> dict[str, tuple[type, bool]]:
    """TrainConfig's scalar fields: name -> (type, None allowed)."""
    from chartrl.train.dqn import TrainConfig

    out: dict[str, tuple[type, bool]] = {}
    for f in fields(TrainConfig):
        text = str(f.type)
        optional = "None" in text
        for t in (bool, int, float, str):
            if re.fullmatch(rf"{t.__name__}( \| None)?", text):
                out[f.name] = (t, optional)
                break
    return out


_A = {bool: "a bool", int: "an int", float: "a float", str: "a str"}


def _value(name: str, kind: type, text: str) -> Any:
    text = text.strip()
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if kind is int:
            v = float(text)
            if v != int(v):
                raise ValueError
            return int(v)
        if kind is float:
            v = float(text)
            if not math.isfinite(v):
                raise ValueError
            return v
        if not text:
            raise ValueError
        return text
    except ValueError:
        raise UsageError(
            f"--param {name}: {text!r} is not {_A[kind]} ({name} is {_A[kind]} field)"
        ) from None


def _check_rule(name: str, value: Any) -> None:
    """The ``train`` command's own rule for the option, when it has one."""
    from chartrl.cli.train_options import OPTIONS

    if name in OPTIONS:
        opt, ok, rule = OPTIONS[name]
    elif name in _RULES:
        (ok, rule), opt = _RULES[name], name
    else:
        return
    if not ok(value):
        raise UsageError(f"--param {name}: {value!r} is out of range, {opt} must be {rule}")


def parse_param(text: str) -> Param:
    """``NAME=SPEC`` -> Param (see the module docstring), or a one-line UsageError."""
    if "=" not in text:
        raise UsageError(
            f"--param {text!r}: use NAME=a,b,c (choices) or NAME=LO:HI[:log] (a range)"
        )
    raw, spec = (x.strip() for x in text.split("=", 1))
    name = raw.replace("-", "_")
    if name in _NOT_SEARCHABLE:
        raise UsageError(
            f"--param {raw}: {name} is not searched by --param; use {_NOT_SEARCHABLE[name]}"
        )
    types = _field_types()
    if name not in types or name in _NOT_SEARCHABLE:
        near = ", ".join(sorted(set(types) - set(_NOT_SEARCHABLE)))
        raise UsageError(f"--param {raw}: no such training field; use one of {near}")
    kind, _ = types[name]
    if not spec:
        raise UsageError(f"--param {raw}: give values after '=' (a,b,c or LO:HI[:log])")
    if ":" in spec:
        return _range(raw, name, kind, spec)
    values = tuple(_value(raw, kind, v) for v in spec.split(","))
    if len(set(values)) != len(values):
        raise UsageError(f"--param {raw}: {spec!r} repeats a value")
    for v in values:
        _check_rule(name, v)
    return Param(name, kind, choices=values)


def _range(raw: str, name: str, kind: type, spec: str) -> Param:
    parts = spec.split(":")
    if kind not in (int, float) or not 2 <= len(parts) <= 4:
        what = "LO:HI[:linear|log[:POINTS]]" if kind in (int, float) else "a choice list a,b,c"
        raise UsageError(f"--param {raw}={spec}: {name} takes {what}")
    lo, hi = (_value(raw, kind, p) for p in parts[:2])
    scale = parts[2].strip() if len(parts) > 2 else "linear"
    if scale not in ("linear", "log"):
        raise UsageError(f"--param {raw}={spec}: scale {scale!r}: use linear or log")
    if not lo < hi:
        raise UsageError(f"--param {raw}={spec}: the range needs LO < HI")
    if scale == "log" and lo <= 0:
        raise UsageError(f"--param {raw}={spec}: a log range needs LO > 0")
    points = GRID_POINTS
    if len(parts) == 4:
        try:
            points = int(parts[3])
        except ValueError:
            points = 0
        if points < 2:
            raise UsageError(f"--param {raw}={spec}: POINTS must be an integer >= 2")
    for v in (lo, hi):
        _check_rule(name, v)
    return Param(name, kind, low=lo, high=hi, log=scale == "log", points=points)


def parse_params(texts: list[str]) -> list[Param]:
    """Every --param, each name once."""
    params = [parse_param(t) for t in texts]
    names = [p.name for p in params]
    for n in names:
        if names.count(n) > 1:
            raise UsageError(f"--param {n} is given twice; give it once with every value")
    return params


def grid(params: list[Param]) -> list[dict[str, Any]]:
    """Every combination of the params' grid values ([{}] without params)."""
    names = [p.name for p in params]
    return [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(*(p.grid() for p in params))
    ]


def distinct_configurations(params: list[Param]) -> float:
    """How many different configurations the params can give an Optuna search (inf with a
    float range)."""
    n = 1.0
    for p in params:
        if not p.is_range:
            n *= len(p.choices)
        elif p.kind is int:
            n *= int(p.high) - int(p.low) + 1  # type: ignore[arg-type]
        else:
            return math.inf
    return n


def applicable(strategy: str, config: dict[str, Any]) -> bool:
    """Whether ``strategy`` trains under ``config`` (TrainConfig fields): stacking frames is the
    cnn's alone (the recurrent policies have a memory of their own), so a grid over frame_stack
    gives the other strategies its value 1 only; the cnn with and without a stack in one sweep."""
    return strategy == "cnn" or config.get("frame_stack", 1) == 1


def canonical(value: Any) -> str:
    """A value as config_id writes it: floats in 6 significant digits, others as str."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def config_id(strategy: str, params: dict[str, Any]) -> str:
    """``cnn|learning_rate=0.0003|norm=group``: the strategy and its searched params, sorted."""
    return "|".join([strategy, *(f"{k}={canonical(params[k])}" for k in sorted(params))])


def trial_id(strategy: str, params: dict[str, Any], seed: int, fold: int) -> str:
    """A filesystem-safe id, the same for the same unit whenever it runs (resume finds it)."""
    import hashlib

    tag = ""
    if params:
        digest = hashlib.sha1(config_id(strategy, params).encode()).hexdigest()[:8]
        tag = f"-{digest}"
    return f"{strategy}{tag}-s{seed}-f{fold}"


def params_json(params: dict[str, Any]) -> str:
    return json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True)
