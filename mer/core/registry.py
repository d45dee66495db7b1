"""Name -> class registries: the one door through which configs reach plugins.

A plugin registers itself with a decorator; configs name it (``fusion.name: attention``), never by
import path, so refactors do not break old configs. A registry knows the package its plugins live
in (``Registry("fusion model", package="fusion")``) and imports its modules the first time it is
asked for a name, so a new plugin is one new module there and nothing else.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, Iterator, Sequence, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that no plugin registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Plugins of one ``kind`` by name.

    ``package``: the package (or packages) whose modules register into it; every module there
    whose name starts with ``prefix`` and neither starts with ``_`` nor is in ``skip`` is imported
    once, on the first lookup (:meth:`get`, :meth:`names`, ``in``, iteration)."""

    def __init__(self, kind: str, package: str | Sequence[str] | None = None, *, prefix: str = "",
                 skip: Sequence[str] = ("base",)) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._packages = (package,) if isinstance(package, str) else tuple(package or ())
        self._prefix = prefix
        self._skip = frozenset(skip)
        self._discovered = not self._packages

    def discover(self) -> "Registry[T]":
        """Import the plugin modules of the registry's packages (once); returns the registry."""
        if self._discovered:
            return self
        self._discovered = True              # before importing: a module may look itself up
        for name in self._packages:
            pkg = importlib.import_module(name)
            for mod in pkgutil.iter_modules(pkg.__path__):
                if (mod.name.startswith(self._prefix) and not mod.name.startswith("_")
                        and mod.name not in self._skip):
                    importlib.import_module(f"{name}.{mod.name}")
        return self

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice "
                                 f"({self._entries[name]!r} and {obj!r})")
            self._entries[name] = obj
            return obj
        return decorator

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a plugin defined in a notebook or a test, to be defined again)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._entries:
            self.discover()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}.{hint}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self.discover()._entries)

    def __contains__(self, name: object) -> bool:
        return name in self.discover()._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
