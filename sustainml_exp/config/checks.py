"""Value checks that a type cannot express; each raises ConfigError with one line naming the key and what is
allowed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sustainml_exp.errors import ConfigError


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        shown = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: {shown}")


def check_range(key: str, value: float, *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise unless lo <(=) value <(=) hi; the message states the allowed interval."""
    bad = isinstance(value, float) and not math.isfinite(value)
    if lo is not None:
        bad |= value <= lo if lo_open else value < lo
    if hi is not None:
        bad |= value >= hi if hi_open else value > hi
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        interval = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {interval}")
