"""A bounded on-disk FIFO of publish-ready messages, for when NATS is away longer
than memory lasts.

Messages go in whole (subject, Nats-Msg-Id, event count, payload), so a
replayed message is byte-for-byte the one that would have been sent and
JetStream's dedup window drops a copy that did land before a crash.

Layout under the spill directory: segment files `NNNNNNNNNNNN.seg`, each a
run of frames

    u32 body length | u32 event count | u32 crc32(count + body) | body (msgpack)

and `position`, the first frame not yet acknowledged ("<segment> <offset>"),
rewritten as acks arrive. A frame is written with one write(2) of an O_APPEND
file, so a killed process leaves whole frames; a frame torn by a power loss
or a full disk fails its length or crc check when the spill is reopened and
is dropped and counted (`torn_events`, or `torn_frames` when even the header
is cut). A drained segment is deleted; the spill is bounded by the bytes of
its live segments.

The spill holds every user's argv and runs as root, so it trusts nothing it
finds: the folder must be owned by the collector's user and not writable by
group or others (SpillError otherwise), is made 0700, and every file is opened
relative to the folder's descriptor with O_NOFOLLOW, files 0600: a symbolic
link planted there makes a clear error, never a write through it.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import logging
import os
import stat
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgpack

log = logging.getLogger(__name__)

HEADER: Final = struct.Struct("<III")
MAX_FRAME: Final = 64 << 20  # larger than any message the contract allows (8 MiB)
POSITION_FILE: Final = "position"
LOCK_FILE: Final = "lock"
NOFOLLOW: Final = os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Spilled:
    """One message as it will be (re)published; `pos` is where its frame starts."""

    subject: str
    msg_id: str
    count: int
    payload: bytes
    pos: tuple[int, int] = (0, 0)
    end: tuple[int, int] = (0, 0)


class SpillError(OSError):
    """The spill directory cannot be used."""


class Spill:
    """Append at the tail, read at the head, acknowledge in any order."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int | None = None) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(64 << 10, max_bytes // 8)
        self.torn_events = 0  # events in frames found torn at open
        self.torn_frames = 0  # frames too short to even say how many events they held
        self.events = 0  # events written and not yet acknowledged
        self._sizes: dict[int, int] = {}  # live segment -> bytes
        self._write_seg = 0
        self._write_fd = -1
        self._read: tuple[int, int] = (0, 0)  # next frame to hand out
        self._read_fd: tuple[int, int] = (-1, -1)  # (segment, fd)
        self._outstanding: deque[tuple[int, int]] = deque()  # handed out, not acked, in order
        self._acked: set[tuple[int, int]] = set()
        self._lock_fd = -1
        self._dir_fd = -1
        try:
            self._open()
        except BaseException:
            for fd in (self._lock_fd, self._dir_fd, self._write_fd, self._read_fd[1]):
                if fd >= 0:
                    os.close(fd)
            raise

    # -- state ------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())

    def has_next(self) -> bool:
        """Whether anything is left to hand out."""
        return self._read < (self._write_seg, self._sizes.get(self._write_seg, 0))

    @property
    def empty(self) -> bool:
        """Nothing to hand out and nothing awaiting an ack."""
        return not self.has_next() and not self._outstanding

    def room(self, n: int) -> bool:
        return self.bytes + HEADER.size + n <= self.max_bytes

    # -- writing ----------------------------------------------------------------

    # builtins.bytes: in the class body, plain `bytes` names the property above.
    def append(self, subject: str, msg_id: str, count: int, payload: builtins.bytes) -> bool:
        """Writes one message; False (nothing written) when the bound is reached."""
        body = msgpack.packb([subject, msg_id, payload], use_bin_type=True)
        if not self.room(len(body)):
            return False
        head = struct.pack("<I", count)
        frame = HEADER.pack(len(body), count, zlib.crc32(body, zlib.crc32(head))) + body
        if self._write_fd < 0 or self._sizes[self._write_seg] + len(frame) > self.segment_bytes:
            self._roll()
        written = os.write(self._write_fd, frame)
        self._sizes[self._write_seg] += written
        if written != len(frame):  # disk full mid-frame: a torn tail, counted at next open
            raise OSError(f"short write to the spill ({written} of {len(frame)} bytes)")
        self.events += count
        return True

    def _roll(self) -> None:
        if self._write_fd >= 0 and self._sizes.get(self._write_seg, 0) == 0:
            return  # the current segment is still empty: keep using it
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_seg += 1
        self._write_fd = self._open_file(
            self._seg_name(self._write_seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND
        )
        self._sizes.setdefault(self._write_seg, 0)

    # -- reading ----------------------------------------------------------------

    def next(self) -> Spilled | None:
        """The oldest message not yet handed out, or None."""
        while self.has_next():
            seg, off = self._read
            if off >= self._sizes.get(seg, 0):
                self._read = (seg + 1, 0)
                continue
            fd = self._fd_for(seg)
            head = os.pread(fd, HEADER.size, off)
            length, count, _ = HEADER.unpack(head)
            body = os.pread(fd, length, off + HEADER.size)
            end = (seg, off + HEADER.size + length)
            self._read = end
            subject, msg_id, payload = msgpack.unpackb(body, raw=False)
            self._outstanding.append((seg, off))
            return Spilled(subject, msg_id, count, payload, (seg, off), end)
        return None

    def _fd_for(self, seg: int) -> int:
        if self._read_fd[0] != seg:
            if self._read_fd[1] >= 0:
                os.close(self._read_fd[1])
            self._read_fd = (seg, self._open_file(self._seg_name(seg), os.O_RDONLY))
        return self._read_fd[1]

    def ack(self, msg: Spilled) -> None:
        """`msg` is stored in JetStream: advance the position past every acked prefix."""
        self._acked.add(msg.pos)
        self.events -= msg.count
        advanced = False
        while self._outstanding and self._outstanding[0] in self._acked:
            self._acked.discard(self._outstanding.popleft())
            advanced = True
        if advanced:
            self._save_position()
            self._drop_drained()

    def _position(self) -> tuple[int, int]:
        return self._outstanding[0] if self._outstanding else self._read

    def _save_position(self) -> None:
        seg, off = self._position()
        tmp = POSITION_FILE + ".tmp"
        fd = self._open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, f"{seg} {off}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, POSITION_FILE, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)

    def _drop_drained(self) -> None:
        seg, off = self._position()
        for s in sorted(self._sizes):
            if s < seg or (s == seg and s != self._write_seg and off >= self._sizes[s]):
                self._remove(s)
        if self.empty and self._sizes.get(self._write_seg, 0):
            # All sent and acked: start over with an empty segment.
            self._remove(self._write_seg)
            self._write_seg += 1
            self._read = (self._write_seg, 0)
            self._save_position()

    def _remove(self, seg: int) -> None:
        if self._read_fd[0] == seg:
            os.close(self._read_fd[1])
            self._read_fd = (-1, -1)
        if seg == self._write_seg and self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        self._sizes.pop(seg, None)
        self._unlink(self._seg_name(seg))

    # -- opening ----------------------------------------------------------------

    @staticmethod
    def _seg_name(seg: int) -> str:
        return f"{seg:012d}.seg"

    def _open_file(self, name: str, flags: int) -> int:
        """`name` in the spill folder, never through a symbolic link; created 0600."""
        try:
            return os.open(name, flags | NOFOLLOW, 0o600, dir_fd=self._dir_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise SpillError(
                    f"{self.dir / name} is a symbolic link: the spill never writes through "
                    "one (someone planted it?); remove it, and check who can write to "
                    f"{self.dir}"
                ) from None
            raise

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._dir_fd)

    def _open_dir(self) -> None:
        """Creates the folder (0700) or checks the one there, and holds it open."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
        except OSError as e:
            why = "it is a symbolic link" if e.errno in (errno.ELOOP, errno.ENOTDIR) else e
            raise SpillError(f"cannot use the spill directory {self.dir}: {why}") from None
        st = os.fstat(self._dir_fd)
        euid = os.geteuid()
        problem = ""
        if st.st_uid != euid:
            problem = f"it is owned by uid {st.st_uid}, not by this collector's uid {euid}"
        elif st.st_mode & 0o022:
            problem = f"group or others may write to it (mode {stat.S_IMODE(st.st_mode):04o})"
        if problem:
            os.close(self._dir_fd)
            self._dir_fd = -1
            raise SpillError(
                f"refusing the spill directory {self.dir}: {problem}. It holds every "
                "user's command lines and the collector writes there as root: use a "
                f"folder only uid {euid} can write to (chown {euid} and chmod 700 it, "
                "or pick another with --spill-dir / [collector] spill_dir)"
            )
        if st.st_mode & 0o077:
            os.fchmod(self._dir_fd, 0o700)  # ours and safe, but readable: close it

    def _open(self) -> None:
        self._open_dir()
        # One writer per spill: a second collector for the same host would interleave.
        self._lock_fd = self._open_file(LOCK_FILE, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpillError(f"the spill {self.dir} is in use by another collector") from None
        segs = sorted(int(name[:-4]) for name in os.listdir(self._dir_fd)
                      if name.endswith(".seg") and name[:-4].isdigit())
        pos = self._load_position()
        for seg in segs:
            if seg < pos[0]:
                self._unlink(self._seg_name(seg))  # drained before the restart
                continue
            start = pos[1] if seg == pos[0] else 0
            self._sizes[seg] = self._check(seg, start)
        self._write_seg = segs[-1] if segs else pos[0]
        self._read = pos if pos[0] in self._sizes else (min(self._sizes, default=pos[0]), 0)
        if self.events:
            log.warning("spill %s: %d events from before a restart will be sent first",
                        self.dir, self.events)
        if not self.events:
            for seg in list(self._sizes):
                self._remove(seg)
            self._write_seg = max(segs, default=pos[0]) + (1 if segs else 0)
            self._read = (self._write_seg, 0)

    def _read_file(self, name: str) -> builtins.bytes:
        fd = self._open_file(name, os.O_RDONLY)
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                return f.read()
        finally:
            os.close(fd)

    def _load_position(self) -> tuple[int, int]:
        try:
            seg, off = self._read_file(POSITION_FILE).decode().split()
            return int(seg), int(off)
        except SpillError:
            raise
        except (OSError, ValueError):
            return (0, 0)

    def _check(self, seg: int, start: int) -> int:
        """Counts the events of valid frames from `start`; cuts a torn tail off.
        Returns the segment's valid length."""
        name = self._seg_name(seg)
        data = self._read_file(name)
        off = start
        while off < len(data):
            if len(data) - off < HEADER.size:
                self.torn_frames += 1
                break
            length, count, crc = HEADER.unpack_from(data, off)
            body = data[off + HEADER.size : off + HEADER.size + length]
            if length > MAX_FRAME or len(body) < length or (
                zlib.crc32(body, zlib.crc32(struct.pack("<I", count))) != crc
            ):
                if length <= MAX_FRAME:
                    self.torn_events += count
                else:
                    self.torn_frames += 1
                break
            self.events += count
            off += HEADER.size + length
        if off < len(data):
            log.warning("spill %s: dropped a torn frame at byte %d (%d bytes)",
                        self.dir / name, off, len(data) - off)
            fd = self._open_file(name, os.O_WRONLY)
            try:
                os.ftruncate(fd, off)
            finally:
                os.close(fd)
        return off

    def close(self) -> None:
        """Keeps what is left for the next start; an empty spill leaves no trace.
        Closing again does nothing."""
        if self._dir_fd < 0:
            return
        left = self._outstanding or self.has_next()
        if left:
            self._save_position()
        for fd in (self._write_fd, self._read_fd[1]):
            if fd >= 0:
                os.close(fd)
        self._write_fd, self._read_fd = -1, (-1, -1)
        if not left:
            for seg in list(self._sizes):
                self._remove(seg)
            for name in (POSITION_FILE, LOCK_FILE):
                self._unlink(name)
            with contextlib.suppress(OSError):
                self.dir.rmdir()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
