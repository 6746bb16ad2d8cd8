"""Finding consumers: the entry point group `snoopbus.consumers`.

Built-ins register through this same group (in snoopbus's own
pyproject.toml), so `--list` and `consume NAME` treat them and third-party
plugins alike. An entry point names either a `Consumer` subclass or an
instance (what the `@consumer` decorator returns).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Final

from .consumer import Consumer

GROUP = "snoopbus.consumers"


class UnknownConsumer(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(known) or "none installed"
        super().__init__(f"no consumer named {name!r} (known: {listed})")


class BadPlugin(TypeError):
    pass


@dataclass(frozen=True)
class Plugin:
    name: str
    entry_point: EntryPoint

    @property
    def source(self) -> str:
        dist = self.entry_point.dist
        return f"{dist.name} {dist.version}" if dist is not None else self.entry_point.value

    def load(self) -> Consumer | type[Consumer]:
        try:
            obj = self.entry_point.load()
        except ImportError as exc:
            if self.name not in EXTRAS:
                raise
            # A built-in whose role's dependencies are not installed (pyproject extras).
            raise ImportError(
                f"consumer {self.name!r} needs {exc.name or 'a module'} that is not installed: "
                f"pip install 'snoopbus[{EXTRAS[self.name]}]' (or 'snoopbus[all]')"
            ) from None
        if isinstance(obj, Consumer) or (isinstance(obj, type) and issubclass(obj, Consumer)):
            return obj
        raise BadPlugin(
            f"entry point {self.name} = {self.entry_point.value} is not a Consumer "
            f"subclass or instance (got {type(obj).__name__})"
        )


# Built-in consumers -> the pyproject extra holding their dependencies.
EXTRAS: Final = {"alert": "alert", "archive": "archive", "forward": "forward"}


def plugins() -> dict[str, Plugin]:
    """Installed consumers by name; the first registration of a name wins."""
    found: dict[str, Plugin] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, Plugin(ep.name, ep))
    return dict(sorted(found.items()))


def load(name: str) -> Consumer | type[Consumer]:
    available = plugins()
    if name not in available:
        raise UnknownConsumer(name, list(available))
    return available[name].load()
