"""Named registries (backbones, losses, fitting steps) that do not depend on import order.

A method module registers its own entries (class exclusion its losses, E2CM its class-means fit),
so a registry lookup that misses imports every module listed in ``PROVIDERS`` once and looks again:
a RunSpec can be built and trained in a fresh interpreter that never imported the method module.
A name registered twice is refused.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

__all__ = ["Registry", "PROVIDERS"]

# Modules that register entries; imported on the first lookup miss.
PROVIDERS = ("earlyexit.backbones", "earlyexit.wrapping", "earlyexit.losses", "earlyexit.methods.class_exclusion",
             "earlyexit.methods.differentiable_branching", "earlyexit.methods.e2cm")

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(entry: T) -> T:
            self.add(name, entry)
            return entry
        return wrap

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry

    def _load_providers(self) -> None:
        for module in PROVIDERS:
            importlib.import_module(module)

    def names(self) -> list[str]:
        self._load_providers()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        if name not in self._entries:
            self._load_providers()
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]
