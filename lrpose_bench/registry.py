"""Name → factory registries for methods, backbones and datasets.

Built-ins register themselves with the decorators below when their module is imported;
:func:`load_builtins` imports the known modules. Third-party packages register through Python
entry points (groups ``lrpose_bench.methods``, ``lrpose_bench.backbones``, ``lrpose_bench.datasets``):
each entry point names a module (or an object) whose import registers its members. A plugin that
fails to import is reported by name and skipped; it never breaks the built-ins.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, TypeVar

from lrpose_bench.errors import ConfigError

T = TypeVar("T")

BUILTIN_MODULES: tuple[str, ...] = (
    "lrpose_bench.data.sources",
    "lrpose_bench.baselines.heatmap",
    "lrpose_bench.baselines.dark",
    "lrpose_bench.baselines.udp",
    "lrpose_bench.baselines.spsr.method",
    "lrpose_bench.methods.cal.method",
    "lrpose_bench.methods.simcc.method",
    "lrpose_bench.methods.rle.method",
    "lrpose_bench.methods.integral.method",
    "lrpose_bench.models.hrnet",
    "lrpose_bench.models.resnet_deconv",
)

ENTRY_POINT_GROUPS = {
    "methods": "lrpose_bench.methods",
    "backbones": "lrpose_bench.backbones",
    "datasets": "lrpose_bench.datasets",
}


@dataclass
class Registry(Generic[T]):
    """A named table of factories with a readable error for unknown names."""

    kind: str
    items: dict[str, T] = field(default_factory=dict)

    def register(self, name: str, item: T) -> T:
        if name in self.items and self.items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self.items[name] = item
        return item

    def get(self, name: str) -> T:
        load_builtins()
        if name not in self.items:
            known = ", ".join(sorted(self.items)) or "(none)"
            broken = (
                f" (plugins that failed to load: {', '.join(p for p, _ in PLUGIN_ERRORS)})" if PLUGIN_ERRORS else ""
            )
            raise ConfigError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}{broken}")
        return self.items[name]

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self.items)


METHODS: Registry[Any] = Registry("method")
BACKBONES: Registry[Callable[..., Any]] = Registry("backbone")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")

#: plugins that failed to load: (entry point name, error text)
PLUGIN_ERRORS: list[tuple[str, str]] = []

_loaded = False


def register_method(cls: Any) -> Any:
    """Class decorator: register a :class:`~lrpose_bench.method.Method` subclass under ``cls.name``."""
    if not getattr(cls, "name", ""):
        raise ValueError(f"{cls!r} has no name")
    return METHODS.register(cls.name, cls)


def register_backbone(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``factory(out_channels: int, **kwargs) -> nn.Module`` under ``name``."""

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        return BACKBONES.register(name, factory)

    return wrap


def register_dataset(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a dataset source factory under ``name``."""

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        return DATASETS.register(name, factory)

    return wrap


def load_builtins() -> None:
    """Import built-in modules (which register themselves) and then third-party entry points."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    _load_entry_points()


def _load_entry_points() -> None:
    for group in ENTRY_POINT_GROUPS.values():
        try:
            entry_points = metadata.entry_points(group=group)
        except Exception as error:  # pragma: no cover - broken metadata
            PLUGIN_ERRORS.append((group, repr(error)))
            continue
        for entry_point in entry_points:
            try:
                entry_point.load()
            except Exception as error:  # a broken plugin never breaks the built-ins
                message = f"{type(error).__name__}: {error}"
                PLUGIN_ERRORS.append((f"{group}:{entry_point.name}", message))
                warnings.warn(
                    f"plugin {entry_point.name!r} ({group}) failed to load and is skipped: {message}",
                    stacklevel=2,
                )
