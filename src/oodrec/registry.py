"""A small explicit name -> object registry with a readable did-you-mean error."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from oodrec.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes (or factories). Names are resolved only at the config/CLI boundary.

    Args:
        kind: what the registry holds, used in error messages ("method", "sampler", "dataset").

    Example::

        SAMPLERS = Registry[type]("sampler")
        SAMPLERS.register("rns", UniformSampler)
        SAMPLERS.get("rns")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; a name may be registered once."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        """Return the object registered under ``name`` or raise ConfigError listing valid names."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.kind} {name!r}.{hint} Valid names: {valid}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
