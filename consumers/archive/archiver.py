"""`snoopbus consume archive --dir PATH`: every event and alert into Parquet.

Messages are held (not acked) until the file holding their events is on
disk: rows gather in an open window, which is committed when it reaches
`roll_events` rows or `roll_bytes` of payload, or is `roll_seconds` old;
then its deliveries are acked. If the commit fails (a full disk, a read-only
mount) nothing is acked: the window keeps its rows, the reason is logged, the
commit is retried with back-off, and the server stops handing out messages
once `max_ack_pending` are held. Nothing is lost, and writing resumes by
itself when space returns.

Files are 0640 and folders 0750, of the archiver's group or `--group`
(`[consumer.archive] group`): the archive holds every user's argv, and only
that group may read it (layout.py).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import grp
import logging
import os
import time
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from snoopbus.consumers.consumer import Consumer, Context
from snoopbus.consumers.delivery import Batch, Delivery, State
from snoopbus.consumers.gctune import tune_gc
from snoopbus.consumers.settings import Settings
from snoopbus.proto import alerts_filter, events_filter, host_token, parse_subject
from snoopbus.proto.backoff import backoff_delay

from . import layout, native
from .columns import NS_PER_DAY, RowError, append_alert, check_event, event_table, records_table
from .layout import PartKey
from .memory import Trimmer
from .native import Decoded, Span
from .retention import Retention
from .writer import Window, Writer, message_key

log = logging.getLogger(__name__)

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_MAX_RETRY = 10.0


def archive_group(name: str) -> int:
    """--group: a group name or number the archiver can give its files to."""
    try:
        gid = int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no group named {name!r} on this host") from None
    if os.geteuid() != 0 and gid != os.getegid() and gid not in os.getgroups():
        raise argparse.ArgumentTypeError(
            f"the archiver (uid {os.geteuid()}) is not in group {name!r}, so it cannot give "
            "its files to it: run it as root, or add its user to the group"
        )
    return gid


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


class Archiver(Consumer):
    name = "archive"
    description = "write every event and alert to Parquet files (a file per day and roll)"
    filters: tuple[str, ...] = (events_filter(),)
    # One batch at a time: commits are the bottleneck and order is simpler.
    # Held messages count against max_ack_pending, and keep their decoded
    # events in memory: this bounds memory while a full disk blocks commits
    # (a window also commits once it holds half of it, see _roll_if_full).
    settings = Settings(concurrency=1, max_ack_pending=10_000, fetch_bytes=2 << 20)

    def __init__(
        self, root: Path, *, roll_seconds: float = 30.0, roll_events: int = 200_000,
        roll_bytes: int = 32 << 20, retention: Retention | None = None,
        retention_every: float = 300.0, horizon: float = 120.0, alerts: bool = True,
        settings: Settings | None = None, gc_tuning: bool = True, gid: int | None = None,
    ) -> None:  # fmt: skip
        if roll_seconds <= 0 or roll_events < 1 or roll_bytes < 1:
            raise ValueError("archive: roll limits must be positive")
        self.settings = settings or type(self).settings
        self.writer = Writer(Path(root), horizon=horizon, gid=gid)
        self.roll_seconds = roll_seconds
        self.roll_events = roll_events
        self.roll_bytes = roll_bytes
        self.retention = retention or Retention()
        self.retention_every = retention_every
        self.archive_alerts = alerts
        # Alerts come through the same durable: the runtime decodes them as maps.
        self.filters = (events_filter(), alerts_filter()) if alerts else (events_filter(),)
        self.gc_tuning = gc_tuning  # process-wide: off when embedded (tests, a host process)
        # Freed memory back to the system after commits (memory.py); process-wide too.
        self.trimmer = Trimmer() if gc_tuning else None
        self.commits = 0
        self.failures = 0  # commits that failed, in a row
        self.last_error: str | None = None
        self._retry_at = 0.0
        self._failing_since: float | None = None
        self._lock = asyncio.Lock()
        self._closing = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._tokens: dict[str, str] = {}
        self.batch_decoder = native.decoder()  # None: the runtime's records or maps
        self._days: dict[int, str] = {}

    # -- options ----------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        a = parser.add_argument_group("archive")
        a.add_argument("--dir", type=Path, required=True, metavar="PATH",
                       help="archive folder (created if missing)")
        a.add_argument("--roll-seconds", type=float, default=30.0, metavar="S",
                       help="commit a file at least this often (default: 30)")
        a.add_argument("--roll-events", type=int, default=200_000, metavar="N",
                       help="commit once this many events are waiting (default: 200000)")
        a.add_argument("--roll-mb", type=float, default=32.0, metavar="MB",
                       help="commit once the open window holds this much memory: its "
                       "rows as columns and the messages it keeps unacked (default: 32)")
        a.add_argument("--retain-days", type=int, metavar="N",
                       help="delete date partitions older than N days (UTC)")
        a.add_argument("--retain-gb", type=float, metavar="GB",
                       help="delete the oldest files past this total size")
        a.add_argument("--retention-every", type=float, default=300.0, metavar="S",
                       help="how often retention runs (default: 300)")
        a.add_argument("--dedup-horizon", type=float, default=120.0, metavar="S",
                       help="how long committed ids are remembered against "
                       "redelivery (default: 120)")
        a.add_argument("--no-alerts", action="store_true", help="archive events only")
        a.add_argument("--group", type=archive_group, metavar="GROUP",
                       help="group that may read the archive (files 0640, folders 0750; "
                       "default: the archiver's own group, i.e. nobody else)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, settings: Settings) -> Consumer:
        retain_bytes = None if args.retain_gb is None else int(args.retain_gb * (1 << 30))
        return cls(
            args.dir, roll_seconds=args.roll_seconds, roll_events=args.roll_events,
            roll_bytes=int(args.roll_mb * (1 << 20)),
            retention=Retention(args.retain_days, retain_bytes),
            retention_every=args.retention_every, horizon=args.dedup_horizon,
            alerts=not args.no_alerts, settings=settings, gid=args.group,
        )  # fmt: skip

    # -- lifecycle ----------------------------------------------------------

    async def setup(self, ctx: Context) -> None:
        if self.gc_tuning:
            tune_gc()
        removed, recalled = await asyncio.to_thread(self.writer.recover)
        log.info(
            "archive: writing to %s (files %o, folders %o, group %s); removed %d temporary "
            "files, recalled %d recent ids; %s", self.writer.root, layout.FILE_MODE,
            layout.DIR_MODE, group_name(self.writer.gid), removed, recalled, native.status(),
        )  # fmt: skip
        blocked = layout.unreachable(self.writer.root, self.writer.gid)
        if blocked is not None and self.writer.gid != os.getegid():
            log.warning(
                "archive: members of group %s cannot reach %s: %s is closed to them; give "
                "the group search permission there, or put the archive elsewhere "
                "([consumer.archive] dir)", group_name(self.writer.gid), self.writer.root, blocked,
            )  # fmt: skip
        await self._retain()
        self._ticker = asyncio.create_task(self._tick())

    async def teardown(self) -> None:
        self._closing.set()
        if self._ticker is not None:
            await self._ticker
        # Last commit: what makes it is acked; what does not is released by
        # the runtime and redelivered later.
        await self.flush(force=True)
        w = self.writer
        log.info(
            "archive: stopped; %d files, %d rows written, %d redelivered duplicates skipped%s",
            w.files_written, w.rows_written, w.duplicates,
            f", {w.window.rows} rows left unacked for redelivery" if w.window.rows else "",
        )  # fmt: skip

    # -- gathering ------------------------------------------------------------

    async def handle(self, batch: Batch) -> None:
        events: list[Delivery] = []
        for delivery in batch:
            if not delivery.is_alert:
                events.append(delivery)
                continue
            try:
                self._add_alert(delivery, delivery.events[0])
            except RowError as exc:
                await delivery.dead_letter(f"seq {delivery.stream_seq}: {exc}", kind="schema")
        self._add_spans([d for d in events if d.span is not None])
        for delivery, err in self._add_deliveries([d for d in events if d.span is None]):
            # No retry makes an unstorable value storable: file it now, none of its rows kept.
            await delivery.dead_letter(f"seq {delivery.stream_seq}: {err}", kind="schema")
        await self._roll_if_full()
        for delivery in events:
            if delivery.state is State.HELD:
                delivery.release()  # its rows are columns in the window now; no payload kept

    def _add_spans(self, deliveries: list[Delivery]) -> None:
        """Add the events the native decoder took (native.py): their rows are
        taken from the batch's table, less the ones already archived. Their
        values all fit their columns: nothing to dead-letter."""
        if not deliveries:
            return
        window, inflight = self.writer.window, self.writer.inflight
        mine_by_token = window.ids["events"]
        theirs_by_token = inflight.ids["events"] if inflight is not None else {}
        done_by_token = self.writer.recent.tokens("events")
        # token -> (ids in the window, ids being committed, ids on disk)
        scopes: dict[str, tuple[set[str], AbstractSet[str], AbstractSet[str]]] = {}
        # (batch, day, token) -> (its table, rows taken, their ids)
        groups: dict[tuple[int, int, str], tuple[Decoded, list[int], list[str]]] = {}
        plan: list[tuple[Delivery, int, bool]] = []
        duplicates = 0
        # In row order (the runtime decodes by subject): a partition's rows are then one slice.
        for delivery in sorted(deliveries, key=_row_order):
            span, decoded = delivery.span, delivery.columns
            assert isinstance(span, Span) and isinstance(decoded, Decoded)
            if delivery.attempt > 1 and message_key(delivery.msg) in self.writer.messages:
                duplicates += span.count  # all of it is on disk: acked on return
                continue
            token = self._token(span.host)
            scope = scopes.get(token)
            if scope is None:
                scope = scopes[token] = (mine_by_token.setdefault(token, set()),
                                         theirs_by_token.get(token, _NONE),
                                         done_by_token.get(token, _NONE))  # fmt: skip
            mine, theirs, done = scope
            key = (id(decoded), span.day, token)
            group = groups.get(key)
            if group is None:
                group = groups[key] = (decoded, [], [])
            ids = decoded.ids[span.start:span.stop]
            if mine.isdisjoint(ids) and theirs.isdisjoint(ids) and done.isdisjoint(ids):
                before = len(mine)
                mine.update(ids)
                if len(mine) - before == len(ids):  # the common case: all of them new
                    group[1].extend(range(span.start, span.stop))
                    group[2].extend(ids)
                    plan.append((delivery, len(ids), False))
                    continue
                mine.difference_update(ids)  # an id twice in the message: one by one
            new = 0
            waiting = False  # some event is in a window not yet on disk
            for row, id_ in enumerate(ids, span.start):
                if id_ in mine or id_ in theirs:
                    waiting = True
                    continue
                if id_ in done:
                    duplicates += 1
                    continue
                mine.add(id_)
                group[1].append(row)
                group[2].append(id_)
                new += 1
            plan.append((delivery, new, waiting))
        self.writer.duplicates += duplicates
        for (_, day, token), (decoded, rows, ids) in groups.items():
            if not rows:
                continue
            table = decoded.table()
            if rows[-1] - rows[0] + 1 == len(rows):  # ascending: adjacent, as the runtime orders
                table = table.slice(rows[0], len(rows))  # them by subject (no copy)
            else:
                table = table.take(pa.array(rows, pa.int32()))
            part = PartKey("events", self._day_text(day), token)
            window.buffer(part).add(table, ids)  # type: ignore[union-attr]  # an events part
        for delivery, new, waiting in plan:
            self._attach(delivery, new, waiting, _HELD)

    def _add_deliveries(self, deliveries: list[Delivery]) -> list[tuple[Delivery, RowError]]:
        """Add the events of every delivery; the ones that cannot be stored, and why."""
        if not deliveries:
            return []
        try:
            self._gather(deliveries)
            return []
        except RowError:
            pass
        bad = []  # some value fits no column: find whose, one delivery at a time
        for delivery in deliveries:
            try:
                self._gather([delivery])
            except RowError as exc:
                bad.append((delivery, exc))
        return bad

    def _gather(self, deliveries: list[Delivery]) -> None:
        """Dedup the events, build their columns a partition at a time, then put
        them in the window: all of it, or (RowError) nothing."""
        window, inflight = self.writer.window, self.writer.inflight
        mine_by_token = window.ids["events"]
        theirs_by_token = inflight.ids["events"] if inflight is not None else {}
        done_by_token = self.writer.recent.tokens("events")
        # host -> [token, ids in the window, ids being committed, ids on disk, ids added]
        scopes: dict[str, list[Any]] = {}
        groups: dict[tuple[int, str, bool], tuple[list[Any], list[str]]] = {}  # -> (rows, ids)
        plan: list[tuple[Delivery, int, bool]] = []
        duplicates = 0
        for delivery in deliveries:
            if delivery.attempt > 1 and message_key(delivery.msg) in self.writer.messages:
                duplicates += delivery.count  # all of it is on disk: acked on return
                continue
            records = delivery.records
            rows: list[Any] = delivery.events if records is None else records  # maps or structs
            as_maps = records is None
            new = 0
            waiting = False  # some event is in a window not yet on disk
            for row in rows:
                host, id_, ts = (row["host"], row["id"], row["ts"]) if as_maps else (
                    row.host, row.id, row.ts)  # fmt: skip
                scope = scopes.get(host)
                if scope is None:
                    token = self._token(host)
                    scope = scopes[host] = [
                        token, mine_by_token.setdefault(token, set()),
                        theirs_by_token.get(token, _NONE), done_by_token.get(token, _NONE), [],
                    ]  # fmt: skip
                if id_ in scope[1] or id_ in scope[2]:  # this window or this batch; committing
                    waiting = True
                    continue
                if id_ in scope[3]:
                    duplicates += 1
                    continue
                scope[1].add(id_)
                scope[4].append(id_)
                key = (ts // NS_PER_DAY, scope[0], as_maps)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = ([], [])
                group[0].append(row)
                group[1].append(id_)
                new += 1
            plan.append((delivery, new, waiting))
        try:
            tables = [(PartKey("events", self._day_text(day), token), _table(rows, maps), ids)
                      for (day, token, maps), (rows, ids) in groups.items()]  # fmt: skip
        except RowError:
            for scope in scopes.values():
                scope[1].difference_update(scope[4])
            if len(deliveries) == 1:
                raise _row_error(deliveries[0]) from None
            raise
        self.writer.duplicates += duplicates
        for part, table, ids in tables:
            window.buffer(part).add(table, ids)  # type: ignore[union-attr]  # an events part
        for delivery, new, waiting in plan:
            # Released at the end of handle(): a held message costs its Msg, not its payload.
            self._attach(delivery, new, waiting, _HELD)

    def _add_alert(self, delivery: Delivery, alert: Mapping[str, Any]) -> None:
        msg = delivery.msg
        token = parse_subject(msg.subject).host or "_"
        seq = msg.metadata.sequence.stream
        alert_id = alert.get("id")
        alert_id = alert_id if isinstance(alert_id, str) and alert_id else f"seq-{seq}"
        window, inflight = self.writer.window, self.writer.inflight
        if window.has("alerts", token, alert_id) or (
            inflight is not None and inflight.has("alerts", token, alert_id)
        ):
            self._attach(delivery, 0, True, 0)
            return
        if ("alerts", token, alert_id) in self.writer.recent:
            self.writer.duplicates += 1
            return  # left open: acked on return
        ts = alert.get("ts")
        if not isinstance(ts, int) or isinstance(ts, bool):
            ts = _ns(msg.metadata.timestamp) if msg.metadata.timestamp else time.time_ns()
        host = alert.get("host")
        part = PartKey("alerts", self._day(ts), token)
        append_alert(
            window.buffer(part),  # type: ignore[arg-type]  # an alerts part
            alert, ts=ts, host=host if isinstance(host, str) else token,
            level=parse_subject(msg.subject).type, seq=seq, alert_id=alert_id,
        )  # fmt: skip
        window.add_ids("alerts", token, [alert_id])
        self._attach(delivery, 1, False, len(msg.data))

    def _attach(self, delivery: Delivery, rows: int, waiting: bool, size: int) -> None:
        if not rows and not waiting:
            return  # all of it is on disk already: acked on return
        window = self.writer.window
        if not window:
            window.opened = time.monotonic()
        delivery.hold()
        window.deliveries.append(delivery)
        window.rows += rows
        window.wire_bytes += size

    def _token(self, host: str) -> str:
        token = self._tokens.get(host)
        if token is None:
            token = self._tokens[host] = host_token(host)
        return token

    def _day(self, ts: int) -> str:
        return self._day_text(ts // NS_PER_DAY)

    def _day_text(self, day: int) -> str:
        text = self._days.get(day)
        if text is None:
            text = self._days[day] = layout.day_of(day * NS_PER_DAY)
        return text

    # -- committing -----------------------------------------------------------

    async def _roll_if_full(self) -> None:
        w = self.writer.window
        # Held messages past half the server's limit would soon stop deliveries
        # and leave the window waiting for the clock: commit instead.
        held_limit = max(1, self.settings.ack_pending_limit // 2)
        if (w.rows >= self.roll_events or w.nbytes >= self.roll_bytes
                or len(w.deliveries) >= held_limit):
            await self.flush()

    async def flush(self, *, force: bool = False) -> bool:
        """Commit the open window and ack its deliveries. False if it failed
        (or a failed one is waiting for its retry time)."""
        async with self._lock:
            if not self.writer.window:
                return True
            if not force and time.monotonic() < self._retry_at:
                return False
            window = self.writer.take()
            try:
                await asyncio.to_thread(self._commit, window)
            except Exception as exc:
                self.writer.give_back(window)
                self._failed(exc)
                return False
            self.writer.committed(window)
            self.commits += 1
            if self._failing_since is not None:
                log.warning(
                    "archive: writing again after %.1fs; acking %d held messages",
                    time.monotonic() - self._failing_since, len(window.deliveries),
                )  # fmt: skip
            self.failures, self._failing_since, self.last_error = 0, None, None
            for delivery in window.deliveries:
                await delivery.ack()
            return True

    def _commit(self, window: Window) -> None:
        self.writer.commit(window)
        if self.trimmer is not None:
            self.trimmer.after_commit()

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self.failures += 1
        delay = backoff_delay(self.failures, 0.5, _MAX_RETRY)
        self._retry_at = now + delay
        w = self.writer.window
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            why = f"no space left on the device holding {self.writer.root}"
        else:
            why = f"cannot write to {self.writer.root}: {type(exc).__name__}: {exc}"
        if self._failing_since is None:
            self._failing_since = now
        if why != self.last_error or self.failures % 20 == 1:
            log.error(
                "archive: %s; not acking: %d messages (%d events) held, retrying in %.1fs "
                "(attempt %d)", why, len(w.deliveries), w.rows, delay, self.failures,
            )  # fmt: skip
        self.last_error = why

    async def _tick(self) -> None:
        period = min(0.5, self.roll_seconds / 4)
        next_retention = time.monotonic() + self.retention_every
        while not self._closing.is_set():
            try:
                await asyncio.wait_for(self._closing.wait(), period)
                return
            except TimeoutError:
                pass
            now = time.monotonic()
            w = self.writer.window
            if w and (now - w.opened >= self.roll_seconds or self.failures):
                await self.flush()
            if now >= next_retention:
                next_retention = now + self.retention_every
                await self._retain()

    async def _retain(self) -> None:
        if not self.retention.active:
            return
        async with self._lock:  # never while a commit is making folders
            try:
                await asyncio.to_thread(self.retention.apply, self.writer.root)
            except OSError as exc:
                log.error("archive: retention failed: %s", exc)


_NONE: frozenset[str] = frozenset()
_HELD = 600  # bytes a held, released message still costs (Msg, Delivery, reply subject)


def _row_order(delivery: Delivery) -> int:
    span = delivery.span
    return span.start if isinstance(span, Span) else 0


def _table(rows: list[Any], maps: bool) -> pa.Table:
    """The columns of one partition's new rows: records (the decoder's fast
    path) straight from their fields, maps checked first. RowError for a value
    no column holds."""
    try:
        if not maps:
            return records_table(rows)
        for event in rows:
            check_event(event)
        return event_table(rows)
    except RowError:
        raise
    except (pa.ArrowException, OverflowError, ValueError, TypeError, RecursionError) as exc:
        raise RowError(f"event: {type(exc).__name__}: {exc}") from None


def _row_error(delivery: Delivery) -> RowError:
    """Why one delivery's events cannot be stored, naming the event and the field."""
    try:
        for i, event in enumerate(delivery.events):
            check_event(event, f"event[{i}]")
        _table(delivery.events, True)
    except RowError as exc:
        return exc
    return RowError("event: cannot be stored (the columns would not build)")


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1e9)
