"""Read the TOML file, apply CHARTRL__SECTION__KEY environment overrides and secrets, validate."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from chartrl.config.settings import Settings
from chartrl.errors import ConfigError

ENV_PREFIX = "CHARTRL__"
ENV_CONFIG = "CHARTRL_CONFIG"
ENV_DATA_DIR = "CHARTRL_DATA_DIR"
_SECRET_FIELDS = {"api_key", "api_secret"}
# Secrets by (section, key): never parsed as TOML from the environment (a token "0x1f" or "1e5"
# would become a number), never written in the config file, masked in every error.
_SECRETS = {("exchange", "api_key"), ("exchange", "api_secret"), ("console", "token")}
_KEY_FILES = {"exchange": "key_file", "console": "token_file"}


def _parse_env_value(key: str, raw: str, section: str = "") -> Any:
    """TOML scalar/array syntax where it parses (5, true, [5, 20]); the raw string otherwise."""
    if key in _SECRET_FIELDS or (section, key) in _SECRETS:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if len(parts) < 2:
            raise ConfigError(
                f"{name}: expected {ENV_PREFIX}SECTION__KEY, e.g. CHARTRL__MARKET__SYMBOL",
                source="environment",
            )
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _parse_env_value(parts[-1], raw, parts[0])
    return tree


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in tree.items():
        out += _leaves(v, f"{prefix}{k}.") if isinstance(v, Mapping) else [f"{prefix}{k}"]
    return out


def _origins(env: Mapping[str, str], overrides: Mapping[str, Any] | None) -> dict[str, str]:
    """Dotted setting -> where a layer above the file set it, so a bad value names its real source."""
    out = {}
    for name in env:
        if name.startswith(ENV_PREFIX):
            out[".".join(p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p)] = name
    if env.get(ENV_DATA_DIR):
        out["data.dir"] = ENV_DATA_DIR
    for leaf in _leaves(overrides or {}):
        out[leaf] = "the command line"
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def read_key_file(
    path: Path, setting: str = "exchange.key_file", allowed: frozenset[str] | None = None
) -> dict[str, str]:
    """Secrets from a TOML file that only its owner can read; refuses a group/world-readable file.

    ``setting`` names the option in errors; ``allowed`` are its keys (default: the exchange keys).
    """
    allowed = frozenset(_SECRET_FIELDS) if allowed is None else allowed
    path = path.expanduser()
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"{setting} = {str(path)!r}: cannot read it ({exc.strerror})") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{setting} = {str(path)!r}: readable by others (mode {stat.S_IMODE(st.st_mode):o}); run chmod 600 on it"
        )
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:  # a directory, or unreadable although stat worked
        raise ConfigError(f"{setting} = {str(path)!r}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        example = " and ".join(f'{k} = "..."' for k in sorted(allowed))
        raise ConfigError(
            f"{setting} = {str(path)!r}: not valid TOML ({exc}); write {example}"
        ) from None
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(
            f"{setting} = {str(path)!r}: unknown keys {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return {k: str(v) for k, v in data.items()}


def format_validation_error(
    exc: ValidationError, origins: Mapping[str, str] | None = None
) -> list[str]:
    """One line per problem: field, value, what is allowed, and the variable or option that set it."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        # A section-level check (field "chart") names every override inside it; a field names its own.
        hits = [
            o
            for f, o in (origins or {}).items()
            if f == field or field.startswith(f + ".") or f.startswith(field + ".")
        ]
        via = f" (set by {', '.join(dict.fromkeys(hits))})" if hits else ""
        if err["type"] == "extra_forbidden":
            lines.append(
                f"{field}: unknown setting{via}; check the spelling (see `chartrl config show` for the known ones)"
            )
            continue
        secret = any(s in field for s in _SECRET_FIELDS) or field in {".".join(k) for k in _SECRETS}
        shown = "***" if secret else _shown(value)
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{field} = {shown}: {msg}{via}")
    return lines


def _shown(value: Any) -> str:
    """A value as the user wrote it: quoted text, plain numbers, and a TOML date as 2018-01-01 (not its repr)."""
    return (
        repr(value) if isinstance(value, (str, int, float, bool)) or value is None else str(value)
    )


def config_path(
    path: Path | str | None = None, env: Mapping[str, str] | None = None
) -> Path | None:
    """The file to read: the argument, else $CHARTRL_CONFIG, else none (built-in defaults)."""
    env = os.environ if env is None else env
    chosen = path or env.get(ENV_CONFIG)
    return Path(chosen).expanduser() if chosen else None


def load_settings(
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Effective settings: defaults < TOML file < environment < ``overrides`` (command-line)."""
    env = os.environ if env is None else env
    source = config_path(path, env)
    data: dict[str, Any] = {}
    if source is not None:
        try:
            data = tomllib.loads(source.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"config file {source} does not exist; pass --config PATH or unset {ENV_CONFIG}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {source} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        for section, key in sorted(_SECRETS):
            if key in (data.get(section) or {}):
                raise ConfigError(
                    f"{section}.{key} is written in {source}; secrets never go in the config file: "
                    f"use CHARTRL__{section.upper()}__{key.upper()} or {section}.{_KEY_FILES[section]}"
                )
    data = _merge(data, _env_overrides(env))
    if env.get(ENV_DATA_DIR):
        data = _merge(data, {"data": {"dir": env[ENV_DATA_DIR]}})
    if overrides:
        data = _merge(data, overrides)
    key_file = data.get("exchange", {}).get("key_file")
    if key_file:
        secrets = read_key_file(Path(key_file))
        data = _merge(
            data, {"exchange": {k: v for k, v in secrets.items() if not data["exchange"].get(k)}}
        )
    token_file = (data.get("console") or {}).get("token_file")
    if token_file and not data["console"].get("token"):
        token = read_key_file(Path(token_file), "console.token_file", frozenset({"token"}))
        data = _merge(data, {"console": token})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, _origins(env, overrides)),
            source=str(source) if source else None,
        ) from None
    from chartrl.logs import register_secret

    for secret in (settings.exchange.api_key, settings.exchange.api_secret, settings.console.token):
        if secret is not None:
            register_secret(secret.get_secret_value())
    return settings


def show_settings(settings: Settings) -> str:
    """The effective configuration as TOML, secrets redacted."""
    dumped = settings.model_dump(mode="json")
    for key in _SECRET_FIELDS:
        if dumped["exchange"].get(key) is not None:
            dumped["exchange"][key] = "***"
    return _to_toml(dumped)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table, e.g. risk.max_total_quote = { "USDT" = 5000.0 }
        items = [f"{_toml_value(str(k))} = {_toml_value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def _to_toml(tree: dict[str, Any]) -> str:
    out: list[str] = []
    for section, values in tree.items():
        out.append(f"[{section}]")
        for k, v in values.items():
            if v is None:
                out.append(f"# {k} = (not set)")
            else:
                out.append(f"{k} = {_toml_value(v)}")
        out.append("")
    return "\n".join(out)
