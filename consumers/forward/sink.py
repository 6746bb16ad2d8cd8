"""What every sink implements, and how a sink says yes, not now, or never.

A sink gets a list of `Item`s and either returns a `Sent` (everything taken
except the items it names) or raises:

- `Transient`: nothing was taken, try again later (connection refused, 429,
  5xx, timeout). The worker backs off and retries, then naks.
- `Permanent`: the sink refuses this batch as it is (4xx other than 408/429).
  The worker dead-letters the messages with the sink's answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .alerts import Alert
    from .spec import SinkSpec

Kind = Literal["event", "alert"]


@dataclass(frozen=True, slots=True)
class Item:
    """One event or alert to forward; `slot` indexes the message it came from."""

    kind: Kind
    data: Any  # an Event map, or an Alert
    slot: int
    subject: str

    @property
    def id(self) -> str:
        if self.kind == "alert":
            alert: Alert = self.data
            return alert.id
        return str(self.data.get("id", ""))


class Transient(Exception):
    """Not accepted now; may be later. `retry_after` is the sink's hint, seconds."""

    def __init__(self, answer: str, retry_after: float | None = None) -> None:
        super().__init__(answer)
        self.answer = answer
        self.retry_after = retry_after


class Permanent(Exception):
    """Refused for good: sending the same thing again gives the same answer."""

    def __init__(self, answer: str) -> None:
        super().__init__(answer)
        self.answer = answer


@dataclass
class Sent:
    """Per-item outcome of a batch the sink took as a whole."""

    rejected: dict[int, str] = field(default_factory=dict)  # index -> answer, for good
    retry: dict[int, str] = field(default_factory=dict)  # index -> answer, try again


class Sink:
    """Base class: one destination. Subclasses set `scheme` and implement `send`."""

    scheme: str = ""
    delivery: str = "at least once"  # documented guarantee, shown by --help and logs

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec

    @property
    def batch_size(self) -> int:
        """Items per `send`."""
        return self.spec.batch

    async def open(self) -> None:
        """Prepare; must not fail because the destination is down (connect lazily)."""

    async def send(self, items: list[Item]) -> Sent:
        raise NotImplementedError

    async def close(self) -> None:
        """Flush and release connections and files."""


def render_each(items: list[Item], render: Any) -> tuple[list[tuple[int, Any]], dict[int, str]]:
    """Render item by item: one item that cannot be rendered is refused alone."""
    out: list[tuple[int, Any]] = []
    refused: dict[int, str] = {}
    for index, item in enumerate(items):
        try:
            out.append((index, render(item)))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            refused[index] = f"cannot render {item.kind} {item.id!r}: {type(exc).__name__}: {exc}"
    return out, refused
