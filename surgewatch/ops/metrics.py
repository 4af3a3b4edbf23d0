"""Prometheus metrics, read from the store at scrape time.

A custom collector instead of counters incremented inside the workers: every worker, beat and this
exporter already share one truth (the store), so the exporter needs no Celery, no multiprocess
directory and no coordination, and any number of workers can come and go between two scrapes.
The price is that only what the store keeps can be exported; each choice below says what that is.

Mentions.  The store keeps bucket counts that expire after the retention period and can be *set*
(X recent counts re-poll the same buckets), so a sum over stored buckets is not a Prometheus counter
(it would go down when an old bucket expires or a re-poll lowers a count).  We export gauges
instead -- the last complete bucket and the last hour -- and the detector's own view of the brand
(observed vs expected for the bucket it scored last).  ``rate()`` must not be applied to them.
The counters that *are* monotonic in the store are the per-source poll and request counts kept in
the source health state; those are exported as ``*_total``.

Expected band.  A verdict carries ``expected`` (the seasonality-aware baseline) but not the
detector's variance, so no honest upper bound can be computed from it: there is no
``surgewatch_expected_upper``; the dashboard draws an approximate Poisson band from ``expected`` and
says so.

Deliveries.  Read from the delivery log (one record per incident, transition and channel), never
recomputed from today's config: a channel removed since still counts what it did.
``surgewatch_deliveries_total{channel,status}`` counts every record the store keeps; the
per-brand ``surgewatch_notifications`` and ``surgewatch_notification_failures`` count those
recorded within ``NOTIFICATION_WINDOW``.

Scrape cost.  The store is read in a fixed number of calls whatever the number of brands (counts
and open incidents of every brand at once, health and verdicts by prefix), and the hour of counts is
cached until the next bucket completes: complete buckets do not change.
"""
from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import unquote, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from surgewatch import clock
from surgewatch.worker.settings import QUEUES
from surgewatch.config import Settings
from surgewatch.ops.health import SourceHealth
from surgewatch.store.base import Store
from surgewatch.store.errors import StoreError, redact_url
from surgewatch.store.keys import verdict_key

log = logging.getLogger("surgewatch.ops.metrics")

NOTIFICATION_WINDOW = 7 * 86400  # incidents opened this long ago still count their deliveries
SEVERITIES = ("watch", "warning", "critical")
SOURCE_STATUSES = ("unknown", "ok", "degraded", "failing", "disabled")
UP_STATUSES = frozenset({"ok", "degraded"})  # a degraded source still delivers mentions
DOWN_STATUSES = frozenset({"failing", "disabled"})  # what /healthz reports as failing
DELIVERY_STATUSES = ("sent", "failed", "sending", "pending", "superseded", "suppressed")

# What a store or an embedded database raises when it cannot answer.  A scrape that meets one of
# these still answers (with surgewatch_store_up 0) rather than failing as a whole.
STORE_ERRORS: tuple[type[BaseException], ...] = (StoreError, sqlite3.Error, OSError)

# Every sample name this module can export (the Grafana test checks the dashboard against it).
EXPORTED_METRICS = frozenset({
    "surgewatch_store_up",
    "surgewatch_broker_up",
    "surgewatch_scrape_duration_seconds",
    "surgewatch_bucket_seconds",
    "surgewatch_mentions_last_bucket",
    "surgewatch_mentions_last_hour",
    "surgewatch_observed_mentions",
    "surgewatch_expected_mentions",
    "surgewatch_anomaly_score",
    "surgewatch_severity",
    "surgewatch_warming_up",
    "surgewatch_verdict_timestamp_seconds",
    "surgewatch_forecast_peak_mentions",
    "surgewatch_forecast_seconds_to_peak",
    "surgewatch_incident_open",
    "surgewatch_incident_opened_timestamp_seconds",
    "surgewatch_source_up",
    "surgewatch_source_status",
    "surgewatch_source_last_success_timestamp_seconds",
    "surgewatch_source_consecutive_failures",
    "surgewatch_source_polls_total",
    "surgewatch_source_requests_total",
    "surgewatch_notification_failures",
    "surgewatch_notifications",
    "surgewatch_deliveries_total",
    "surgewatch_queue_length",
    "surgewatch_queue_unacked",
    "surgewatch_heartbeat_timestamp_seconds",
    "surgewatch_stale_after_seconds",
    "surgewatch_pipeline_up",
})

_SEVERITY_RANK = {"quiet": 0, "watch": 1, "warning": 2, "critical": 3}


# -- the broker -------------------------------------------------------------------------------------
@dataclass
class BrokerReading:
    up: bool | None  # None: this broker kind is not probed (we cannot tell)
    queues: dict[str, int] = field(default_factory=dict)
    unacked: int | None = None
    error: str | None = None


class BrokerProbe:
    """Reachability and queue lengths of the Celery broker, without Celery.

    Redis: kombu keeps a queue as a list named after it, plus one list per priority step
    (``collect\\x06\\x163`` ...), and the messages delivered but not yet acknowledged in the hash
    ``unacked`` (with ``acks_late`` those are the tasks running now).  SQLite (``sqla+sqlite``):
    kombu's ``kombu_queue`` / ``kombu_message`` tables give the waiting (visible) messages; a taken
    message stays there invisible after its ack too (kombu 5.7 keeps it), so the running ones cannot
    be told apart and ``unacked`` is unknown (None: not exported).  Other transports are not probed.
    """

    def __init__(self, url: str, timeout: float = 2.0):
        self.url = url
        self.safe_url = redact_url(url)
        self.timeout = timeout
        self._redis: Any = None

    def read(self) -> BrokerReading:
        if self.url.startswith(("redis://", "rediss://", "unix://")):
            return self._read_redis()
        if self.url.startswith("sqla+sqlite:///"):
            return self._read_sqlite(unquote(self.url[len("sqla+sqlite:///"):]))
        return BrokerReading(up=None, error=f"queue lengths are not read from {urlsplit(self.url).scheme}:// brokers")

    def _read_redis(self) -> BrokerReading:
        import redis
        from kombu.transport.redis import PRIORITY_STEPS, Channel
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if self._redis is None:
            # No retries (redis-py 6 retries 3 times with up to 10 s backoff by default): a probe
            # must answer within the scrape, and the next scrape is the retry.
            self._redis = redis.Redis.from_url(
                self.url, socket_connect_timeout=self.timeout, socket_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
        keys = {q: [q if step == 0 else f"{q}{Channel.sep}{step}" for step in PRIORITY_STEPS] for q in QUEUES}
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for names in keys.values():
                    for name in names:
                        pipe.llen(name)
                pipe.hlen(Channel.unacked_key)
                replies = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            # redis-py's messages name host and port, never the password
            return BrokerReading(up=False, error=f"broker {self.safe_url}: {type(exc).__name__}: {exc}")
        queues, i = {}, 0
        for q, names in keys.items():
            queues[q] = int(sum(replies[i:i + len(names)]))
            i += len(names)
        return BrokerReading(up=True, queues=queues, unacked=int(replies[i]))

    def _read_sqlite(self, path: str) -> BrokerReading:
        try:
            # Read-only: probing must never create the broker's file before a worker does.
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=self.timeout)
        except sqlite3.Error as exc:
            return BrokerReading(up=False, error=f"broker {self.safe_url}: cannot open: {exc}")
        try:
            rows = con.execute(
                "SELECT q.name, COALESCE(SUM(m.visible = 1), 0), COALESCE(SUM(m.visible = 0), 0) "
                "FROM kombu_queue q LEFT JOIN kombu_message m ON m.queue_id = q.id GROUP BY q.name"
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # reachable, but no worker has declared a queue yet
                return BrokerReading(up=True, queues={q: 0 for q in QUEUES})
            return BrokerReading(up=False, error=f"broker {self.safe_url}: {exc}")
        finally:
            con.close()
        queues = {q: 0 for q in QUEUES}
        for name, visible, _taken in rows:
            if name in queues:
                queues[name] = int(visible)
        return BrokerReading(up=True, queues=queues)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None


# -- the collector ----------------------------------------------------------------------------------
def _complete_end(settings: Settings, bucket: int, now: float) -> float:
    """Start of the first bucket that is not complete yet: the same cut evaluate() uses (a bucket
    is complete once the slowest source has had time to poll past its end)."""
    d = settings.detector
    lag = d.evaluation_lag_seconds
    if lag is None:
        lag = max((s.interval for s in settings.sources.enabled().values()), default=0)
    return math.floor((now - lag) / bucket) * bucket


class SurgeWatchCollector(Collector):
    """Reads the store (and the broker) on every ``collect()``.

    ``store`` is a callable so the store is opened lazily in the thread that scrapes (an embedded
    SQLite connection belongs to the thread that made it).  Scrapes are serialised by a lock: the
    store connection is not shared between threads, and two overlapping scrapes would only double
    the load for the same answer.
    """

    def __init__(
        self,
        settings: Settings,
        store: Callable[[], Store],
        broker: BrokerProbe | None = None,
        now: Callable[[], float] = clock.now,
    ):
        self.settings = settings
        self._store = store
        self.broker = broker if broker is not None else BrokerProbe(settings.broker.url)
        self._now = now
        self._lock = threading.Lock()
        self._counts_end: float | None = None  # the window the cached counts cover ends here
        self._counts: dict[str, dict[str, dict[float, int]]] = {}
        self.last_error: str | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # never touch the store at registration time

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            started = time.perf_counter()
            families = self._collect_store()
            families += self._collect_broker()
            duration = GaugeMetricFamily(
                "surgewatch_scrape_duration_seconds", "Seconds this scrape spent reading the store and the broker."
            )
            duration.add_metric([], time.perf_counter() - started)
            families.append(duration)
        return iter(families)

    # -- store ----------------------------------------------------------------------------------
    def _collect_store(self) -> list[Metric]:
        up = GaugeMetricFamily("surgewatch_store_up", "1 if the store answered this scrape, else 0.")
        try:
            store = self._store()
            families = self._read_store(store, self._now())
        except STORE_ERRORS as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("metrics: the store did not answer: %s", self.last_error)
            up.add_metric([], 0)
            return [up]
        self.last_error = None
        up.add_metric([], 1)
        return [up, *families]

    def _read_store(self, store: Store, now: float) -> list[Metric]:
        settings = self.settings
        brands = [b.name for b in settings.brands]
        bucket = int(store.bucket_seconds)
        out: list[Metric] = []

        g = GaugeMetricFamily("surgewatch_bucket_seconds", "Width of a counting bucket, in seconds.")
        g.add_metric([], bucket)
        out.append(g)

        out += self._mentions(store, brands, bucket, now)
        out += self._verdicts(store, brands)
        out += self._incidents(store, brands)
        out += self._sources(store, brands)
        out += self._notifications(store, now)
        out += self._heartbeats(store, now)
        return out

    def _heartbeats(self, store: Store, now: float) -> list[Metric]:
        from surgewatch.ops.health import pipeline_health

        pipeline = pipeline_health(self.settings, store, now)
        at = GaugeMetricFamily(
            "surgewatch_heartbeat_timestamp_seconds",
            "Last heartbeat (epoch) of beat, a worker of each queue (worker:<queue>) and each evaluate tick "
            "(evaluate:<entry>); no sample for one never seen.", labels=["component"])
        for name, ts in pipeline.last_seen.items():
            if ts is not None:
                at.add_metric([name], ts)
        stale_after = GaugeMetricFamily(
            "surgewatch_stale_after_seconds", "A heartbeat older than this makes /healthz answer 503.")
        stale_after.add_metric([], pipeline.stale_after)
        up = GaugeMetricFamily(
            "surgewatch_pipeline_up", "1 if every expected heartbeat is fresh (what /healthz checks), else 0.")
        up.add_metric([], 1 if pipeline.ok else 0)
        return [at, stale_after, up]

    def _mentions(self, store: Store, brands: list[str], bucket: int, now: float) -> list[Metric]:
        last = GaugeMetricFamily(
            "surgewatch_mentions_last_bucket",
            "Mentions counted in the last complete bucket (a gauge: stored counts expire and can be re-set).",
            labels=["brand", "source"],
        )
        hour = GaugeMetricFamily(
            "surgewatch_mentions_last_hour",
            "Mentions counted in the complete buckets of the last hour (a gauge, not a counter).",
            labels=["brand", "source"],
        )
        end = _complete_end(self.settings, bucket, now)
        n = max(1, round(3600 / bucket))  # "an hour" in whole buckets
        sources = list(self.settings.sources.enabled())
        # Complete buckets do not change once the evaluation lag has passed, so the window is read
        # once per bucket, not once per scrape (with 15 s scrapes and 60 s buckets, 1 scrape in 4).
        if self._counts_end != end:
            self._counts = store.counts_many({b: (end - n * bucket, end) for b in brands})
            self._counts_end = end  # only once read: a failed read is retried at the next scrape
        for brand in brands:
            counts = self._counts.get(brand, {})
            for source in sorted(set(sources) | set(counts)):
                series = counts.get(source, {})
                last.add_metric([brand, source], series.get(float(end - bucket), 0))
                hour.add_metric([brand, source], sum(series.values()))
        return [last, hour]

    def _verdicts(self, store: Store, brands: list[str]) -> list[Metric]:
        fams = {
            "observed": GaugeMetricFamily(
                "surgewatch_observed_mentions", "Mentions in the bucket the detector scored last.", labels=["brand"]),
            "expected": GaugeMetricFamily(
                "surgewatch_expected_mentions",
                "The detector's expected (baseline, seasonality-aware) mentions for that bucket.", labels=["brand"]),
            "score": GaugeMetricFamily(
                "surgewatch_anomaly_score", "Anomaly score of the last scored bucket, 0 to 1.", labels=["brand"]),
            "severity": GaugeMetricFamily(
                "surgewatch_severity", "Severity of the last verdict: 0 quiet, 1 watch, 2 warning, 3 critical.",
                labels=["brand"]),
            "warming_up": GaugeMetricFamily(
                "surgewatch_warming_up", "1 while the detector is still learning the brand's baseline.",
                labels=["brand"]),
            "at": GaugeMetricFamily(
                "surgewatch_verdict_timestamp_seconds", "Start of the bucket the detector scored last (epoch).",
                labels=["brand"]),
            "peak": GaugeMetricFamily(
                "surgewatch_forecast_peak_mentions", "Forecast peak mentions per bucket (only during a surge).",
                labels=["brand"]),
            "to_peak": GaugeMetricFamily(
                "surgewatch_forecast_seconds_to_peak", "Forecast seconds until the peak (only during a surge).",
                labels=["brand"]),
        }
        verdicts = store.list_state(verdict_key(""))
        for brand in brands:
            v = verdicts.get(verdict_key(brand))
            if not v:
                continue  # never scored: no sample rather than a misleading zero
            fams["observed"].add_metric([brand], float(v["observed"]))
            fams["expected"].add_metric([brand], float(v["expected"]))
            fams["score"].add_metric([brand], float(v["score"]))
            fams["severity"].add_metric([brand], _SEVERITY_RANK.get(v.get("severity", "quiet"), 0))
            fams["warming_up"].add_metric([brand], 1 if v.get("warming_up") else 0)
            fams["at"].add_metric([brand], float(v["at"]))
            forecast = v.get("forecast")
            if forecast:
                fams["peak"].add_metric([brand], float(forecast["peak_rate"]))
                fams["to_peak"].add_metric([brand], float(forecast["seconds_to_peak"]))
        return list(fams.values())

    def _incidents(self, store: Store, brands: list[str]) -> list[Metric]:
        # One sample per severity, 0 or 1 (the enum pattern): `== 1` selects the open ones, and a
        # brand without an incident still has series, so alert rules need no absent().
        open_ = GaugeMetricFamily(
            "surgewatch_incident_open", "1 for the severity of the brand's open incident, 0 for the others.",
            labels=["brand", "severity"])
        since = GaugeMetricFamily(
            "surgewatch_incident_opened_timestamp_seconds", "When the brand's open incident opened (epoch).",
            labels=["brand", "incident"])
        open_incidents = store.open_incidents(brands)
        for brand in brands:
            incident = open_incidents.get(brand)
            current = incident["severity"] if incident else None
            for severity in SEVERITIES:
                open_.add_metric([brand, severity], 1 if severity == current else 0)
            if incident:
                since.add_metric([brand, str(incident["id"])], float(incident["opened_at"]))
        return [open_, since]

    def _sources(self, store: Store, brands: list[str]) -> list[Metric]:
        up = GaugeMetricFamily(
            "surgewatch_source_up", "1 if the source's last poll worked (ok or degraded), else 0.",
            labels=["brand", "source"])
        status = GaugeMetricFamily(
            "surgewatch_source_status", "1 for the source's current status, 0 for the others.",
            labels=["brand", "source", "status"])
        last_success = GaugeMetricFamily(
            "surgewatch_source_last_success_timestamp_seconds", "When the source last polled successfully (epoch).",
            labels=["brand", "source"])
        failures = GaugeMetricFamily(
            "surgewatch_source_consecutive_failures", "Failed polls in a row.", labels=["brand", "source"])
        polls = CounterMetricFamily(
            "surgewatch_source_polls", "Polls recorded in the source's health state.", labels=["brand", "source"])
        requests = CounterMetricFamily(
            "surgewatch_source_requests", "Requests to the outside service recorded in the source's health state.",
            labels=["brand", "source"])
        health = {(h.brand, h.source): h for h in SourceHealth.load_all(store)}
        for brand in brands:
            for source in self.settings.sources.enabled():
                h = health.get((brand, source)) or SourceHealth(source, brand)
                up.add_metric([brand, source], 1 if h.status in UP_STATUSES else 0)
                for s in SOURCE_STATUSES:
                    status.add_metric([brand, source, s], 1 if h.status == s else 0)
                if h.last_success is not None:
                    last_success.add_metric([brand, source], float(h.last_success))
                failures.add_metric([brand, source], h.consecutive_failures)
                polls.add_metric([brand, source], h.polls)
                requests.add_metric([brand, source], h.requests)
        return [up, status, last_success, failures, polls, requests]

    def _notifications(self, store: Store, now: float) -> list[Metric]:
        from surgewatch.store.base import DELIVERY_STATUSES as LOG_STATUSES

        counts: dict[tuple[str, str, str], int] = {}
        totals: dict[tuple[str, str], int] = {}
        for d in store.list_deliveries():
            totals[(d.channel, d.status)] = totals.get((d.channel, d.status), 0) + 1
            if (d.created_at or 0.0) < now - NOTIFICATION_WINDOW:
                continue
            outcome = "sending" if d.status == "claimed" else d.status
            k = (d.brand or "", d.channel, outcome)
            counts[k] = counts.get(k, 0) + 1
        failures = GaugeMetricFamily(
            "surgewatch_notification_failures",
            f"Deliveries that failed, recorded in the last {NOTIFICATION_WINDOW // 86400} days.",
            labels=["brand", "channel"])
        deliveries = GaugeMetricFamily(
            "surgewatch_notifications",
            f"Deliveries by status (sent, failed, sending, pending, superseded, suppressed), recorded in the last "
            f"{NOTIFICATION_WINDOW // 86400} days.",
            labels=["brand", "channel", "status"])
        pairs = sorted({(b, c) for b, c, _ in counts} | {(b.name, c) for b in self.settings.brands
                                                          for c in _channels(self.settings)})
        for brand, channel in pairs:
            failures.add_metric([brand, channel], counts.get((brand, channel, "failed"), 0))
            for status in DELIVERY_STATUSES:
                deliveries.add_metric([brand, channel, status], counts.get((brand, channel, status), 0))
        logged = CounterMetricFamily(
            "surgewatch_deliveries", "Records of the delivery log by channel and status (what happened to each "
            "incident transition on each channel).", labels=["channel", "status"])
        for channel in sorted({c for c, _ in totals} | set(_channels(self.settings))):
            for status in LOG_STATUSES:
                logged.add_metric([channel, status], totals.get((channel, status), 0))
        return [failures, deliveries, logged]

    # -- broker ---------------------------------------------------------------------------------
    def _collect_broker(self) -> list[Metric]:
        reading = self.broker.read()
        if reading.up is None:
            return []
        up = GaugeMetricFamily("surgewatch_broker_up", "1 if the Celery broker answered this scrape, else 0.")
        up.add_metric([], 1 if reading.up else 0)
        if not reading.up:
            return [up]
        length = GaugeMetricFamily(
            "surgewatch_queue_length", "Tasks waiting in each Celery queue.", labels=["queue"])
        for q, n in reading.queues.items():
            length.add_metric([q], n)
        if reading.unacked is None:  # the embedded (SQL) broker cannot tell running tasks from done ones
            return [up, length]
        unacked = GaugeMetricFamily(
            "surgewatch_queue_unacked", "Tasks taken by a worker and not yet acknowledged (running now, acks_late).")
        unacked.add_metric([], reading.unacked)
        return [up, length, unacked]


def _channels(settings: Settings) -> list[str]:
    from surgewatch.registry import configured_channels

    return configured_channels(settings)


def build_registry(collector: SurgeWatchCollector) -> CollectorRegistry:
    """A registry of our own: the process's default registry would add Python GC and process
    metrics of the exporter itself, which say nothing about SurgeWatch."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
