"""Typed, frozen configuration read from TOML, environment overrides and secrets."""

from chartrl.config.loader import load_settings, show_settings
from chartrl.config.settings import Settings

__all__ = ["Settings", "load_settings", "show_settings"]
