"""Which snoopbus events feed which Sigma log source (product `linux`).

| category           | event types                                           |
|--------------------|-------------------------------------------------------|
| `process_creation` | `exec`                                                |
| `file_event`       | `create`, `modify`, `close_write`, `moved_to`, `renamed` |
| `file_delete`      | `delete`                                              |
| `file_rename`      | `renamed`                                             |
| `file_attrib`      | `attrib` (snoopbus's own category: chmod/chown)       |
| `file_summary`     | `summary` (snoopbus's own: a flood's counts, proto/README.md) |

A rule for any other product, category or a `service` is skipped: this
stream never produces those events.
"""

from __future__ import annotations

from sigma.rule import SigmaLogSource

PRODUCT = "linux"

EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "process_creation": ("exec",),
    "file_event": ("create", "modify", "close_write", "moved_to", "renamed"),
    "file_delete": ("delete",),
    "file_rename": ("renamed",),
    "file_attrib": ("attrib",),
    "file_summary": ("summary",),
}


def all_event_types() -> list[str]:
    return sorted({t for types in EVENT_TYPES.values() for t in types})


def category_of(logsource: SigmaLogSource) -> tuple[str | None, str]:
    """(category, "") when this stream feeds the log source, else (None, why not)."""
    product, category, service = logsource.product, logsource.category, logsource.service
    if service:
        return None, f"logsource service {service!r} is not produced by snoopbus"
    if product != PRODUCT:
        return None, f"logsource product {product!r} is not produced by snoopbus (only linux)"
    if category not in EVENT_TYPES:
        return None, f"logsource category {category!r} is not produced by snoopbus"
    return category, ""
