"""Allowed ranges of numeric settings, declared once beside each dataclass field.

A field declared ``l2: float = ranged(1e-4, ge=0)`` carries its range in the field's metadata;
``check_ranges(obj, "train.")`` (called from the dataclass's ``__post_init__``, and by
``oodrec.config.parse_options`` for every method, sampler and simulator options) refuses a value
outside it with ``ConfigError("train.l2 must be >= 0, got -1.0")``, naming the key, the allowed
range and the value. A tuple field (``eval.ks``) is checked element by element; a value that is
not a number (``train.threads='auto'``, None) is left to the field's own checks. ``range_text``
is what ``--help`` and the messages print.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from oodrec.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; None bounds are open. ``finite``: NaN and +-inf are out."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the range (NaN never does)."""
        if math.isnan(value) or (self.finite and math.isinf(value)):
            return False
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def text(self, finite_word: bool = False) -> str:
        """``>= 0``, ``>= 1 and <= 4``; ``a finite number > 0`` for a lower bound that is not
        reached (``gt``) or with ``finite_word``."""
        parts = [
            f"{op} {_num(bound)}"
            for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if bound is not None
        ]
        body = " and ".join(parts) or "a number"
        finite = self.finite and (finite_word or self.gt is not None)
        return f"a finite number {body}" if finite and parts else body


def _num(value: float) -> str:
    if isinstance(value, int) and value > 2**20 and (value + 1).bit_count() == 1:
        return f"2**{value.bit_length()} - 1"  # 2**63 - 1, not 9223372036854775807
    return str(int(value)) if float(value).is_integer() else repr(value)


def ranged(default: Any = None, *, factory: Any = None, **bounds: Any) -> Any:
    """A dataclass field with ``default`` (or ``default_factory=factory``) and the range
    ``Range(**bounds)`` in its metadata (``ge``, ``gt``, ``le``, ``lt``, ``finite``)."""
    meta = {"range": Range(**bounds)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def field_range(cls: type, name: str) -> Range | None:
    """The declared range of field ``name`` of dataclass ``cls`` (None: none declared)."""
    for f in fields(cls):
        if f.name == name:
            return f.metadata.get("range")
    return None


def _numbers(value: Any) -> list[float]:
    values = value if isinstance(value, (tuple, list)) else (value,)
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def check_ranges(obj: Any, prefix: str = "") -> Any:
    """Refuse a field of dataclass instance ``obj`` outside its declared range.

    Args:
        obj: the dataclass instance.
        prefix: the key prefix of its fields in messages (``"train."``).

    Returns:
        ``obj``.

    Raises:
        ConfigError: ``{prefix}{field} must be {range}, got {value}``.
    """
    for f in fields(obj):
        rng = f.metadata.get("range")
        if rng is None:
            continue
        value = getattr(obj, f.name)
        bad = [v for v in _numbers(value) if not rng.contains(v)]
        if bad:
            shown = list(value) if isinstance(value, tuple) else value
            each = " (each value)" if isinstance(value, (tuple, list)) else ""
            odd = any(math.isnan(v) or math.isinf(v) for v in bad)
            raise ConfigError(f"{prefix}{f.name} must be {rng.text(odd)}{each}, got {shown}")
    return obj


__all__ = ["Range", "check_ranges", "field_range", "ranged"]
