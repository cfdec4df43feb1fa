"""Strategy name -> policy class, for the neural policies and the rule baselines.

The neural policies are listed here. Rule baselines live in :mod:`chartrl.strategies.rules`
(another module) and are read from its ``RULES`` mapping name -> class, lazily, so importing the
registry never imports the rules (or the other way round). Every strategy, neural or rule,
answers ``forward(frames, position, hidden) -> (q[3], hidden)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chartrl.chart.spec import ChartSpec
from chartrl.errors import UsageError


def _neural() -> dict[str, type]:
    from chartrl.strategies.cnn import CNNPolicy
    from chartrl.strategies.recurrent import CNNRNNPolicy, GRUPolicy
    from chartrl.strategies.resnet import ResNetPolicy

    return {"cnn": CNNPolicy, "cnnrnn": CNNRNNPolicy, "gru": GRUPolicy, "resnet": ResNetPolicy}


NEURAL_NAMES = ("cnn", "cnnrnn", "gru", "resnet")


def rule_baselines() -> dict[str, Callable[..., Any]]:
    """Name -> class of every rule baseline: ``chartrl.strategies.rules.RULES``, the one list."""
    from chartrl.strategies.rules import RULES

    return dict(RULES)


def available() -> list[str]:
    """Every strategy name: neural policies first, then rule baselines."""
    return list(NEURAL_NAMES) + sorted(rule_baselines())


def is_neural(name: str) -> bool:
    return name in NEURAL_NAMES


def input_shape(spec: ChartSpec) -> tuple[int, int, int]:
    """(channels, height, width) of the frames the renderer makes for ``spec``."""
    try:
        from chartrl.chart.tensor_render import spec_channels
    except ImportError:  # renderer not importable: same rule it documents (diff frames double C)
        channels = spec.channels * (2 if spec.diff_frame else 1)
    else:
        channels = spec_channels(spec)
    return channels, spec.height, spec.width


def policy_class(name: str) -> type:
    neural = _neural()
    if name not in neural:
        raise UsageError(f"unknown neural strategy {name!r}; use one of {', '.join(NEURAL_NAMES)}")
    return neural[name]


def build_policy(
    name: str, spec: ChartSpec | None = None, config: dict[str, Any] | None = None, **overrides: Any
):
    """A fresh neural policy: from ``spec`` (its input shape) or from a saved ``config`` dict."""
    cls = policy_class(name)
    if config is not None:
        # A model saved before ``norm`` existed has BatchNorm weights: it loads as what it is.
        kwargs = {"norm": "batch", **config}
    elif spec is not None:
        c, h, w = input_shape(spec)
        kwargs = {"in_channels": c, "height": h, "width": w}
    else:
        raise ValueError("build_policy needs a ChartSpec or a saved config")
    kwargs.update(overrides)
    for key in ("widths",):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return cls(**kwargs)


def build_rule(name: str, **kwargs: Any) -> Any:
    """A rule baseline by name (UsageError listing the names when unknown)."""
    rules = rule_baselines()
    if name not in rules:
        raise UsageError(f"unknown strategy {name!r}; use one of {', '.join(available())}")
    return rules[name](**kwargs)
