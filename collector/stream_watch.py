"""The stream's room on this host: what `up` chooses, and what it and `doctor --nats` watch.

`up` bounds the stream by the disk it stores on: [stream] max_mb = 0 (auto)
becomes disk_fraction of what the state folder's disk has free (plus what the
stream already holds there), handed to every child through the environment
(SNOOPBUS_STREAM_MAX_MB), so whichever creates the stream creates it so.

`read_stream` is one look at the server: the stream's fill against its
limit, and per durable its lag and what it missed (the count its runtime
recorded in the durable's metadata, plus what retention removed ahead of it
since: proto/stream_limits.removed_unread).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from snoopbus.proto import STREAM_NAME
from snoopbus.proto.settings_file import StreamSection, env_name
from snoopbus.proto.stream_limits import (
    auto_max_bytes,
    disk_warning,
    fill_warning,
    human_bytes,
    missed_of,
    removed_unread,
)


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def choose_max_mb(state_dir: Path, section: StreamSection) -> tuple[dict[str, str], str]:
    """(environment for the children, the line `up` says) for [stream] max_mb."""
    if section.max_mb > 0:
        return {}, f"stream limit: {section.max_mb} MiB ([stream] max_mb)"
    free = shutil.disk_usage(state_dir).free
    held = folder_bytes(state_dir / "nats" / "jetstream")
    chosen = auto_max_bytes(free, held, section.disk_fraction)
    mb = max(1, chosen >> 20)
    text = (f"stream limit: {human_bytes(mb << 20)} ({section.disk_fraction:g} of the "
            f"{human_bytes(free + held)} free for it in {state_dir}; set [stream] max_mb to "
            "choose), max age "
            + (f"{section.max_age_days:g} days" if section.max_age_days else "none"))
    return {env_name("stream", "max_mb"): str(mb)}, text


@dataclass
class StreamView:
    """One reading of the stream and its durables."""

    bytes: int = 0
    max_bytes: int = -1
    first_seq: int = 0
    messages: int = 0
    free: int = -1  # bytes free on the state folder's disk (-1: not on this host)
    lag: dict[str, tuple[int, int]] = field(default_factory=dict)  # pending, ack pending
    missed: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


async def read_stream(
    js: JetStreamContext, durables: Iterable[str], *, warn_percent: float,
    state_dir: Path | None = None, timeout: float = 1.0,  # noqa: ASYNC109 (nats-py's own)
) -> StreamView:  # fmt: skip
    info = await js.stream_info(STREAM_NAME)
    view = StreamView(bytes=info.state.bytes, max_bytes=info.config.max_bytes or -1,
                      first_seq=info.state.first_seq, messages=info.state.messages)
    warning = fill_warning(view.bytes, view.max_bytes, warn_percent)
    if warning:
        view.warnings.append(warning)
    if state_dir is not None:
        usage = shutil.disk_usage(state_dir)
        view.free = usage.free
        warning = disk_warning(usage.free, usage.total, str(state_dir))
        if warning:
            view.warnings.append(warning)
    for name in durables:
        try:
            ci = await js.consumer_info(STREAM_NAME, name, timeout=timeout)
        except NotFoundError:
            continue
        view.lag[name] = (ci.num_pending or 0, ci.num_ack_pending or 0)
        delivered = ci.delivered.stream_seq or 0
        # (a durable that never had a message has missed nothing yet: it starts at the head)
        ahead = removed_unread(delivered + 1, view.first_seq - 1, view.first_seq)
        view.missed[name] = missed_of(ci.config.metadata) + (ahead if delivered else 0)
    return view
