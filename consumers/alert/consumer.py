"""`snoopbus consume alert`: match every event against Sigma rules, publish alerts.

Per batch: match the events, fold repeats (throttle.py), publish the alerts
on NATS and wait for their acks, then return so the runtime acks the events:
an event is acked only once its alerts are stored.

Beside the events, it watches the collectors' meta reports (host_feed.py):
a host gone silent, stalled or losing events raises an alert of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snoopbus.proto import ALERT_LEVELS, events_filter
from snoopbus.proto import metric_names as names
from snoopbus.proto.metric_names import Metric

from ..consumer import Consumer, Context
from ..delivery import Batch
from ..gctune import refreeze, tune_gc
from ..settings import Settings
from . import ruleset
from .alerts import build_alert, build_correlation_alert
from .correlate import Correlator
from .fields import FieldMap
from .host_feed import HostFeed
from .hosts import LOSS_JUMP, LOSS_WINDOW, SILENT_AFTER, HealthConfig, HostHealth
from .loader import LoadReport, resolve_paths
from .logsources import all_event_types
from .outputs import NatsOutput, Output, StdoutOutput, WebhookConfig, WebhookOutput, fan_out
from .resend import REASONS as LOST_REASONS
from .resend import Resend
from .ruleset import RuleSet, RuleSetError
from .throttle import DEFAULT_KEY_FIELDS, Throttle

log = logging.getLogger(__name__)


class NoRules(ValueError):
    pass


@dataclass
class AlertStats:
    events: int = 0
    hits: int = 0
    published: int = 0  # alerts sent (summaries included)
    reloads: int = 0  # rule sets swapped in on SIGHUP
    reloads_refused: int = 0  # SIGHUPs whose new set was refused (the old one stayed)
    # Alerts made outside the stream (host health, folded summaries) given up, by reason.
    lost: Counter[str] = field(default_factory=Counter)


@dataclass
class AlertTally:
    """Alerts put on the bus, by (rule id, level), and each counted rule's title
    (snoopbus_alerts_total and snoopbus_alert_rule_info). The id, not the
    title: titles are not unique and may change between rule versions."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    titles: dict[str, str] = field(default_factory=dict)

    def add(self, alerts: Iterable[dict[str, Any]]) -> None:
        for alert in alerts:
            rule = alert.get("rule") or {}
            rule_id = str(rule.get("id") or "?")
            self.counts[rule_id, str(alert.get("level", "?"))] += 1
            self.titles[rule_id] = str(rule.get("title") or "")


class AlertConsumer(Consumer):
    name = "alert"
    description = "Sigma rules on live events: alerts on snoopbus.alerts.<host>.<level>"
    # Every event type some log source maps (logsources.py); fixed, so the
    # durable's filter does not change with the rules loaded.
    filters = tuple(events_filter(type=t) for t in all_event_types())
    # Matching is CPU work: one batch at a time, 32 KiB of payload each, matched
    # while its events are still in the CPU's cache (Settings.handle_bytes):
    # 0.68-0.72x the CPU per event of whole fetches (tests/bench/alerter.py).
    settings = Settings(concurrency=1, handle_bytes=32 << 10)

    def __init__(
        self,
        rules: Sequence[Path | str] | None = None,
        *,
        field_map: FieldMap | None = None,
        field_map_file: Path | None = None,
        pipelines: Sequence[Path] = (),
        throttle: float = 60.0,
        throttle_keys: Sequence[str] = DEFAULT_KEY_FIELDS,
        outputs: Sequence[Output] = (),
        settings: Settings | None = None,
        gc_tuning: bool = False,
        health: HealthConfig | None = None,
        watch_hosts: Sequence[str] = (),
    ) -> None:
        self.settings = settings or type(self).settings
        self.gc_tuning = gc_tuning  # process-wide (gctune.py): on when run as `consume alert`
        self.rule_paths = resolve_paths(rules)
        # A field map file is read again on each reload; a FieldMap object is kept.
        self.field_map_file = field_map_file
        self.pipelines = [Path(p) for p in pipelines]  # read again on each reload too
        try:
            rules_in_use = ruleset.build(self.rule_paths, field_map, field_map_file,
                                         self.pipelines)  # fmt: skip
        except RuleSetError as exc:
            raise NoRules(f"alert: {exc}") from None
        self._use(rules_in_use)
        self.throttle = Throttle(throttle, throttle_keys)
        self.extra_outputs = list(outputs)
        self.outputs: list[Output] = []
        self.stats = AlertStats()
        self.tally = AlertTally()
        self._ticker: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        # Host health (hosts.py): None turns it off (tests of the rules alone).
        self.health = HostHealth(health) if health is not None else None
        self.watch_hosts = tuple(watch_hosts) or ("*",)
        self.feed: HostFeed | None = None
        self._reloading: asyncio.Task[bool] | None = None
        self._reload_again = False

    def _use(self, rules: RuleSet) -> None:
        """Match with `rules` from the next batch on (a batch keeps the engine it began with)."""
        correlator = Correlator(rules.report.correlations)
        old = getattr(self, "correlator", None)
        if old is not None:
            correlator.adopt(old)  # the open groups of correlations in both sets go on
        self.correlator = correlator
        self.rules = rules
        self.field_map = rules.field_map
        self.report: LoadReport = rules.report
        self.engine = rules.engine

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("alert")
        g.add_argument(
            "--rules",
            type=Path,
            nargs="+",
            action="extend",
            metavar="PATH",
            help="Sigma rule files or directories (default: the packaged set)",
        )
        g.add_argument(
            "--field-map",
            type=Path,
            metavar="FILE",
            help="TOML/YAML overrides of the Sigma field mapping (see README)",
        )
        g.add_argument(
            "--pipeline",
            type=Path,
            action="append",
            default=[],
            metavar="FILE",
            help="a pySigma processing pipeline (YAML) applied to each rule before "
            "the field mapping; repeatable (see README)",
        )
        g.add_argument(
            "--throttle",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="fold repeats of an alert within this window (0: off; default 60)",
        )
        g.add_argument(
            "--throttle-keys",
            default=",".join(DEFAULT_KEY_FIELDS),
            metavar="F,F",
            help="Sigma fields that make two alerts of a rule the same (default %(default)s)",
        )
        g.add_argument("--stdout", action="store_true", help="also print alerts, one line each")
        g.add_argument("--stdout-json", action="store_true", help="also print alerts as JSON")
        g.add_argument("--webhook", metavar="URL", help="also POST each alert as JSON here")
        g.add_argument("--webhook-retries", type=int, default=3, metavar="N")
        g.add_argument("--min-level", choices=ALERT_LEVELS, default="informational",
                       help="lowest level for stdout and webhook (NATS gets all)")  # fmt: skip
        h = parser.add_argument_group("host health (a collector gone silent, stalled or losing)")
        h.add_argument("--silent-after", type=float, default=SILENT_AFTER, metavar="SECONDS",
                       help="alert when a host sends no report for this long (0: off; "
                       "default %(default)g; keep it above the collectors' heartbeat_interval)")
        h.add_argument("--loss-jump", type=int, default=LOSS_JUMP, metavar="N",
                       help="alert when a host's lost events rise by N within --loss-window "
                       "(0: off; default %(default)d)")
        h.add_argument("--loss-window", type=float, default=LOSS_WINDOW, metavar="SECONDS",
                       help="default %(default)g")
        h.add_argument("--watch-host", action="append", default=None, metavar="HOST",
                       help="watch this host's collector (repeat; default: every host; "
                       "the alerter's credentials must let it read that host's meta)")
        h.add_argument("--no-host-health", action="store_true",
                       help="do not watch the collectors at all")  # fmt: skip

    @classmethod
    def from_args(cls, args: argparse.Namespace, settings: Settings) -> Consumer:
        try:
            return cls._from_args(args, settings)
        except NoRules as exc:
            # The consume CLI reports a ValueError in one line, exit status 2.
            raise ValueError(str(exc)) from None

    @classmethod
    def _from_args(cls, args: argparse.Namespace, settings: Settings) -> Consumer:
        outputs: list[Output] = []
        if args.stdout or args.stdout_json:
            outputs.append(StdoutOutput(args.min_level, as_json=args.stdout_json))
        if args.webhook:
            config = WebhookConfig(args.webhook, retries=args.webhook_retries,
                                   min_level=args.min_level)  # fmt: skip
            outputs.append(WebhookOutput(config))
        keys = [k.strip() for k in args.throttle_keys.split(",") if k.strip()]
        health = None if args.no_host_health else HealthConfig(
            args.silent_after, args.loss_jump, args.loss_window)
        return cls(args.rules, field_map_file=args.field_map, pipelines=args.pipeline,
                   throttle=args.throttle,
                   throttle_keys=keys, outputs=outputs, settings=settings,
                   gc_tuning=True, health=health, watch_hosts=args.watch_host or ())  # fmt: skip

    async def setup(self, ctx: Context) -> None:
        if self.gc_tuning:
            tune_gc()  # after the rules are loaded: they are never walked again
        self.outputs = [NatsOutput(ctx.js), *self.extra_outputs]
        r = self.report
        log.info("alert: %d rules loaded, %d skipped, from %s; matching %s",
                 len(r.rules), len(r.skipped), ", ".join(map(str, self.rule_paths)),
                 ", ".join(self.engine.event_types))  # fmt: skip
        if self.throttle.window > 0:
            self._ticker = asyncio.create_task(self._summaries())
        if self.health is not None:
            owns = ctx.settings.partition.owns
            self.feed = HostFeed(self.health, self._send, self.watch_hosts, owns,
                                 Resend("host alerts", self.stats.lost))
            await self.feed.start(ctx.nc, ctx.js)
            log.info("alert: watching the collectors of %s (silent after %gs)",
                     ", ".join(self.watch_hosts), self.health.config.silent_after)  # fmt: skip

    async def handle(self, batch: Batch) -> None:
        now = time.monotonic()
        alerts: list[dict[str, Any]] = []
        opened: list[tuple[Any, ...]] = []
        engine, correlator = self.engine, self.correlator
        for delivery in batch:
            records = delivery.records
            if records is not None:  # the decoder's fast path: no event maps unless a rule hits
                hits = engine.match_records(records)
                self.stats.events += len(records)
            else:
                hits = [hit for event in delivery.events for hit in engine.match(event)]
                self.stats.events += len(delivery.events)
            for hit in hits:
                self.stats.hits += 1
                if hit.rule.id in correlator.by_base:
                    alerts += [build_correlation_alert(f) for f in correlator.feed(hit)]
                    if hit.rule.id in correlator.silent:
                        continue  # a base rule only (Sigma's generate: false)
                if self.throttle.admit(hit, now, opened):
                    alerts.append(build_alert(hit))
        summaries = self.throttle.expire(now)
        try:
            await self._send(alerts + summaries)
        except BaseException:
            # The runtime redelivers these events: their alerts must not count as sent.
            self.throttle.forget(opened)
            self.throttle.requeue(summaries)
            raise

    async def teardown(self) -> None:
        self._closing.set()
        if self._reloading is not None:
            self._reloading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloading
        if self._ticker is not None:
            await self._ticker
        if self.feed is not None:
            await self.feed.stop()
        try:
            await self._send(self.throttle.expire(time.monotonic(), everything=True))
        except Exception as exc:  # shutting down: say what is lost, do not hide the rest
            log.error("alert: folded summaries not sent at shutdown: %s", exc)
        for output in self.outputs:
            await output.close()

    def reload(self) -> None:
        """SIGHUP (`systemctl reload`): load the rules and the field map file
        again. One reload at a time; a SIGHUP during one runs another after it
        (the files may have changed again)."""
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True
            return
        self._reloading = asyncio.create_task(self.reload_rules())

    async def reload_rules(self) -> bool:
        """Load the rules again and use them from the next batch, unless the new
        set is worse (ruleset.py): then keep the old one and say why. True if
        swapped. The events of a batch are all matched by one set, and the
        throttle's windows (by rule id) go on: nothing is lost or sent twice."""
        swapped = False
        while True:
            self._reload_again = False
            in_use = len(self.report.rules)
            base = None if self.field_map_file else self.field_map
            try:
                # Off the event loop: batches go on with the old set meanwhile.
                # (pySigma's warnings are caught with catch_warnings, process-wide:
                # one the loop's thread emits meanwhile may be noted as the rules'.)
                new = await asyncio.to_thread(ruleset.build, self.rule_paths, base,
                                              self.field_map_file, self.pipelines)  # fmt: skip
                problems = [str(p) for p in ruleset.new_problems(self.rules, new)]
            except RuleSetError as exc:
                problems = [str(exc)]
            except Exception as exc:  # a bug must not take the alerter down with the old set
                problems = [f"{type(exc).__name__}: {exc}"]
            if problems:
                self.stats.reloads_refused += 1
                log.error("alert: reload refused, still matching the %d rules loaded before: %s",
                          in_use, "; ".join(problems))  # fmt: skip
            else:
                what = ruleset.changes(self.rules, new)
                self._use(new)
                swapped = True
                if self.gc_tuning:
                    refreeze()  # no reference to the old set is left here
                self.stats.reloads += 1
                log.info("alert: rules reloaded: %d rules (%s), %d skipped, from %s",
                         len(new.report.rules), what,
                         len(new.report.skipped), ", ".join(map(str, self.rule_paths)))  # fmt: skip
            if not self._reload_again:
                return swapped

    def metrics(self) -> Iterable[tuple[Metric, list[tuple[list[str], float]]]]:
        counts = sorted(self.tally.counts.items())
        yield names.ALERTS, [([rule_id, level], n) for (rule_id, level), n in counts]
        titles = sorted(self.tally.titles.items())
        yield names.ALERT_RULE_INFO, [([rule_id, title], 1) for rule_id, title in titles]
        lost = {reason: 0 for reason in LOST_REASONS} | self.stats.lost
        yield names.ALERTS_LOST, [([reason], n) for reason, n in sorted(lost.items())]
        ignored = self.feed.ignored if self.feed is not None else 0
        yield names.META_IGNORED, [([], ignored)]

    async def _send(self, alerts: list[dict[str, Any]]) -> None:
        if alerts:
            await fan_out(self.outputs, alerts)  # raises unless NATS stored them
            self.stats.published += len(alerts)
            self.tally.add(alerts)

    async def _summaries(self) -> None:
        """Send folded summaries when windows close, even while no events come."""
        period = min(1.0, self.throttle.window / 4)
        resend = Resend("folded summaries", self.stats.lost)
        while not self._closing.is_set():
            try:
                await asyncio.wait_for(self._closing.wait(), period)
            except TimeoutError:
                batch: list[tuple[float | None, dict[str, Any]]] = [
                    *resend.take(), *((None, s) for s in self.throttle.expire(time.monotonic()))]
                try:
                    await self._send([summary for _, summary in batch])
                except Exception as exc:
                    resend.failed(batch, time.monotonic())
                    log.error("alert: could not send folded summaries (will retry): %s", exc)
