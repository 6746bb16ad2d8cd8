"""What every sink implements, and how a sink says yes, not now, or never.

A sink turns one item into the bytes it sends for it (`render`), and sends a
batch of those (`send`): it returns a `Sent` (everything taken except the
items it names, by their index in the batch) or raises:

- `Transient`: nothing was taken, try again later (connection refused, 429,
  5xx, timeout). The worker backs off and retries, then naks.
- `Permanent`: the sink refuses this batch as it is (4xx other than 408/429).
  The worker dead-letters the messages with the sink's answer.

The worker renders and cuts batches (at `batch` items or `batch_bytes`
bytes, whichever comes first), so memory for a batch is bounded by bytes
and a retry sends the same bytes again without rendering anew.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

# A sink's two kinds of failure are the HTTP client's (defined there: it raises them).
from ..http import Permanent as Permanent
from ..http import Transient as Transient

if TYPE_CHECKING:
    from .alerts import Alert
    from .spec import SinkSpec

Kind = Literal["event", "alert"]
# What rendering a hostile or odd event may raise: that item alone is refused.
RENDER_ERRORS = (ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError)


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


Rendered = tuple[Item, bytes]  # an item and the bytes the sink sends for it


@dataclass
class Sent:
    """Per-item outcome of a batch the sink took as a whole."""

    rejected: dict[int, str] = field(default_factory=dict)  # index -> answer, for good
    retry: dict[int, str] = field(default_factory=dict)  # index -> answer, try again
    # Items the receiver says it dropped without saying which (an OTLP partial
    # success): counted and logged, since no message can be named to retry.
    dropped: int = 0
    dropped_why: str = ""


class Sink:
    """Base class: one destination. Subclasses set `scheme`, `render` and `send`."""

    scheme: str = ""
    delivery: str = "at least once"  # documented guarantee, shown by --help and logs

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec

    @property
    def batch_size(self) -> int:
        """Items per `send`."""
        return self.spec.batch

    @property
    def batch_bytes(self) -> int:
        """Rendered bytes per `send` (one item larger than this goes alone)."""
        return self.spec.batch_bytes

    async def open(self) -> None:
        """Prepare; must not fail because the destination is down (connect lazily)."""

    def render(self, item: Item) -> bytes:
        """The bytes sent for one item; may raise one of RENDER_ERRORS."""
        raise NotImplementedError

    async def send(self, batch: list[Rendered]) -> Sent:
        raise NotImplementedError

    async def close(self) -> None:
        """Flush and release connections and files."""


def cannot_render(item: Item, exc: BaseException) -> str:
    return f"cannot render {item.kind} {item.id!r}: {type(exc).__name__}: {exc}"
