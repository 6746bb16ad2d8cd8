"""A BPF ring buffer consumed through its own mapping, as libbpf does it.

BCC's reader (libbpf's ring_buffer__poll) calls back into Python through
ctypes once per record and each record is then copied out with
ctypes.string_at: both per record, and together the largest share of the
reader's time at high rates. Here the map is mapped once and a drain is one
Python loop that slices every committed record out in order, then hands the
space back to the kernel with one store of the consumer position.

Layout (kernel/bpf/ringbuf.c, the mmap ABI libbpf relies on):

    page 0            consumer position, u64, the only writable page
    page 1            producer position, u64
    pages 2..         the data area, mapped twice in a row, so a record that
                      wraps past the end reads as one contiguous slice

Each record starts with an 8-byte header: u32 length whose bit 31 marks a
record still being written (BUSY) and bit 30 one its writer discarded, then
u32 page offset; the next record starts at the next multiple of 8.
"""

from __future__ import annotations

import mmap
import select
import struct

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SIZE = 8
# Native formats, not "<": the kernel reads and writes these positions while we
# do, and struct packs a standard-size ("<Q") field one byte at a time, so the
# kernel could see a torn consumer position (a smaller one reads as a full
# buffer: records lost), and we a torn producer one. Native ones are one
# aligned load or store (x86-64, the only architecture the probes support).
_U32 = struct.Struct("I")
_U64 = struct.Struct("Q")


class RingBufferError(OSError):
    """The map cannot be mapped or polled as a ring buffer."""


class RingBuffer:
    """One BPF_MAP_TYPE_RINGBUF map of `size` data bytes (a power of two)."""

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise RingBufferError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        self.size = size
        self._mask = size - 1
        try:
            self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                       mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            # The producer page, then the data area twice.
            self._data = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=page)
        except OSError as exc:
            raise RingBufferError(f"cannot map the ring buffer: {exc}") from exc
        self._base = page
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def positions(self) -> tuple[int, int]:
        """(consumer, producer) positions: bytes ever read and ever written."""
        return _U64.unpack_from(self._consumer, 0)[0], _U64.unpack_from(self._data, 0)[0]

    def fill_ratio(self) -> float:
        """Written-but-unread share of the data area (0..1)."""
        cons, prod = self.positions()
        return max(0, prod - cons) / self.size

    def wait(self, timeout_s: float) -> bool:
        """Blocks until the kernel signals new records or the timeout ends."""
        return bool(self._epoll.poll(timeout_s))

    def drain(self, limit: int = 1 << 30) -> list[bytes]:
        """Every committed record in order (at most `limit` bytes of them),
        copied out; their space is then the kernel's again. Stops at a record
        still being written: the next drain takes it."""
        data, mask, base = self._data, self._mask, self._base
        unpack_u32 = _U32.unpack_from
        cons = start = _U64.unpack_from(self._consumer, 0)[0]
        # x86-64 keeps loads in order, so what precedes the producer position
        # (and each header's cleared BUSY bit) is visible once that is read.
        prod = _U64.unpack_from(data, 0)[0]
        stop = min(prod, start + limit)
        out: list[bytes] = []
        append = out.append
        while cons < stop:
            off = base + (cons & mask)
            (length,) = unpack_u32(data, off)
            if length & BUSY_BIT:
                break
            if not length & DISCARD_BIT:
                append(data[off + HDR_SIZE : off + HDR_SIZE + length])
            cons += ((length & ~DISCARD_BIT) + HDR_SIZE + 7) & ~7
        if cons != start:
            _U64.pack_into(self._consumer, 0, cons)
        return out

    def close(self) -> None:
        self._epoll.close()
        self._consumer.close()
        self._data.close()
