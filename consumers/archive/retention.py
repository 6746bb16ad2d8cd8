"""Retention: drop what is older than N days, then the oldest past N bytes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from . import layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    days: int | None = None  # keep today and the N days before it (UTC)
    max_bytes: int | None = None  # total size of the archive's files

    def __post_init__(self) -> None:
        if self.days is not None and self.days < 0:
            raise ValueError("retention: days must be >= 0")
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ValueError("retention: bytes must be >= 0")

    @property
    def active(self) -> bool:
        return self.days is not None or self.max_bytes is not None

    def apply(self, root: Path, today: date | None = None) -> list[Path]:
        """Delete what falls outside; the paths removed. Whole date partitions
        go by age; by size, files go oldest first (by day, then commit time)."""
        if not self.active:
            return []
        removed: list[Path] = []
        kept: list[layout.ArchiveFile] = []
        cutoff = None
        if self.days is not None:
            today = today or datetime.now(UTC).date()
            cutoff = (today - timedelta(days=self.days)).isoformat()
        for f in layout.files(root):
            if cutoff is not None and f.date < cutoff:
                _unlink(f.path, removed)
            else:
                kept.append(f)
        if self.max_bytes is not None:
            total = sum(f.size for f in kept)
            kept.sort(key=lambda f: (f.date, layout.commit_ns(f.path) or 0, f.path.name))
            for f in kept:
                if total <= self.max_bytes:
                    break
                _unlink(f.path, removed)
                total -= f.size
        layout.remove_empty_dirs(root)
        if removed:
            log.info("archive: retention removed %d files", len(removed))
        return removed


def _unlink(path: Path, removed: list[Path]) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    removed.append(path)
