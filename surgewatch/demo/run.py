"""``surgewatch demo``: the whole pipeline against a simulated world, in under a minute.

A local feed server serves a scripted Friday: a quiet morning of brand chatter, then a ticket launch
sends mentions up ~25x, and the site's traffic follows about twenty minutes later.  The real RSS
collector, the real Celery tasks (worker + embedded beat on the embedded SQLite broker) and the real
detector run on a simulated clock ~400x faster than the wall clock; the alert timeline is read back
from the store at the end.  Nothing here reaches the internet.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from surgewatch.clock import ENV as CLOCK_ENV
from surgewatch.clock import SimClock
from surgewatch.config import Settings
from surgewatch.demo.feedserver import FeedServer

BRAND = "Acme"
QUERY = '"Acme Live" OR acmelive -jobs'
SITE = "https://www.acme.example"

_BRAND_TITLES = [
    "Acme Live {year}: tickets on sale Friday at 09:30",
    "Who is going to Acme Live? The line-up so far",
    "acmelive presale codes are out",
    "Acme Live announces extra dates",
    "Queue for Acme Live tickets already at 40,000",
    "I got Acme Live tickets!!! 🎟️🎉",
    "Acme Live site is slow, anyone else?",
    "#acmelive the queue page keeps refreshing",
    "Review: last year's Acme Live was the best weekend",
    "Acme Live price tiers explained",
]
_NOISE_TITLES = [
    "Acme jobs fair comes to town",  # excluded by -jobs
    "Acmeville council approves new park",  # not a word match
    "Live music this weekend: a guide",
    "Acme Corp quarterly results",  # "Acme" alone is not the query
]
_PAGES = ["/tickets", "/tickets/friday", "/lineup", "/queue", "/"]


@dataclass(frozen=True)
class Scenario:
    """The scripted day.  All times are epoch seconds of the simulated clock."""

    day: datetime = datetime(2026, 11, 27, 7, 0, tzinfo=timezone.utc)  # a Friday
    hours: float = 5.25
    onset_after: float = 150 * 60  # ticket launch announced at 09:30
    ramp: float = 35 * 60  # mentions peak 35 minutes after the onset
    surge_factor: float = 25.0  # peak mention rate / baseline rate (the record Twitter surge was ~25x)
    decay_half_life: float = 18 * 60
    traffic_lag: float = 20 * 60  # the site's traffic follows the mentions
    baseline_per_min: dict[str, float] = field(default_factory=lambda: {"/news.rss": 0.8, "/social.atom": 1.5})
    noise_per_min: float = 0.6
    traffic_baseline_rpm: float = 1500.0
    traffic_factor: float = 6.0
    seed: int = 20261127

    @property
    def start(self) -> float:
        return self.day.timestamp()

    @property
    def end(self) -> float:
        return self.start + self.hours * 3600

    @property
    def onset(self) -> float:
        return self.start + self.onset_after

    @property
    def mention_peak(self) -> float:
        return self.onset + self.ramp

    @property
    def traffic_peak(self) -> float:
        return self.mention_peak + self.traffic_lag

    def surge(self, t: float) -> float:
        """0 before the onset, rising to 1 at the peak (a steepening ramp, as word spreads), then decaying."""
        if t < self.onset:
            return 0.0
        if t < self.mention_peak:
            x = (t - self.onset) / self.ramp
            return x**2.5
        return 0.5 ** ((t - self.mention_peak) / self.decay_half_life)

    def rate_multiplier(self, t: float) -> float:
        # A gentle morning rise, so the baseline is not flat.
        morning = 1.0 + 0.3 * math.sin(math.pi * min(1.0, (t - self.start) / (6 * 3600)))
        return morning * (1.0 + (self.surge_factor - 1.0) * self.surge(t))

    def traffic_rpm(self, t: float) -> float:
        return self.traffic_baseline_rpm * (1.0 + (self.traffic_factor - 1.0) * self.surge(t - self.traffic_lag))

    def items(self) -> dict[str, list[dict[str, Any]]]:
        """Every item each feed will ever publish, oldest first.  Deterministic (seeded)."""
        rng = np.random.default_rng(self.seed)
        out: dict[str, list[dict[str, Any]]] = {path: [] for path in self.baseline_per_min}
        n = 0
        first = self.start - SimulatedFeeds.WINDOW  # the feeds already list some history at 07:00
        minutes = int((self.end - first) // 60)
        for i in range(minutes):
            t0 = first + i * 60
            for path, base in self.baseline_per_min.items():
                host = "news.example" if "news" in path else "social.example"
                for _ in range(int(rng.poisson(base * self.rate_multiplier(t0 + 30)))):
                    n += 1
                    title = _BRAND_TITLES[int(rng.integers(len(_BRAND_TITLES)))].format(year=2027)
                    page = _PAGES[int(rng.integers(len(_PAGES)))]
                    link = f"https://{host}/p/{n}"
                    out[path].append(
                        {
                            "id": f"{host}-{n}",
                            "title": title,
                            "summary": f"<p>More at <a href=\"{SITE}{page}\">{SITE}{page}</a></p>",
                            "link": link,
                            "published": datetime.fromtimestamp(t0 + float(rng.uniform(0, 60)), timezone.utc),
                            "author": f"user{int(rng.integers(1, 5000))}",
                        }
                    )
                    # Syndication: one news story in ten also appears in the social feed (same link):
                    # the collector must count it once.
                    if host == "news.example" and n % 10 == 0:
                        out["/social.atom"].append(dict(out[path][-1]))
                for _ in range(int(rng.poisson(self.noise_per_min / len(self.baseline_per_min)))):
                    n += 1
                    title = _NOISE_TITLES[int(rng.integers(len(_NOISE_TITLES)))]
                    out[path].append(
                        {
                            "id": f"{host}-{n}",
                            "title": title,
                            "summary": title,
                            "link": f"https://{host}/p/{n}",
                            "published": datetime.fromtimestamp(t0 + float(rng.uniform(0, 60)), timezone.utc),
                            "author": "desk",
                        }
                    )
        for items in out.values():
            items.sort(key=lambda i: i["published"])
        return out


@dataclass(frozen=True)
class History:
    """The weeks before the scripted day, backfilled into the store so the demo starts where a real
    deployment would be after a few weeks: a seasonal baseline of mentions, three past surges, and
    the site's traffic for the same time (a CSV, as a brand's ``traffic: {csv: ...}``).  The traffic
    model calibrates on it, so the alerts can say how much traffic is coming and when."""

    scenario: Scenario = field(default_factory=Scenario)
    days: int = 21
    # (days before the scripted day, local hour, mention surge factor): the model learns from these
    surges: tuple[tuple[int, float, float], ...] = ((17, 14.0, 8.0), (10, 19.5, 14.0), (4, 12.0, 20.0))
    elasticity: float = 0.556  # traffic multiple = mention multiple ** elasticity: 25x mentions -> ~6x traffic

    @property
    def start(self) -> float:
        return self.scenario.start - self.days * 86400

    @property
    def end(self) -> float:
        return self.scenario.start - SimulatedFeeds.WINDOW  # the feeds list the rest

    @staticmethod
    def diurnal(t: float) -> float:
        """The mention rate's daily shape (x the scripted day's 07:00 level), smooth through the day and
        equal to the scripted morning from 07:00 to 13:00."""
        h = (t % 86400) / 3600
        if h < 6:
            return 0.5
        if h < 7:
            return 0.5 + 0.5 * (h - 6)
        if h < 13:
            return 1.0 + 0.3 * math.sin(math.pi * (h - 7) / 6)
        if h < 19:
            return 1.0
        return 1.0 - 0.5 * (h - 19) / 5

    def _surge_shape(self, t: float) -> tuple[float, float]:
        """(mention multiple, traffic multiple) of the past surges at ``t`` (1 outside them)."""
        sc = self.scenario
        for days_before, hour, factor in self.surges:
            onset = sc.start - days_before * 86400 + (hour - 7) * 3600
            peak = onset + sc.ramp
            if onset <= t < peak + 6 * 3600:
                x = ((t - onset) / sc.ramp) ** 2.5 if t < peak else 0.5 ** ((t - peak) / sc.decay_half_life)
                mention = 1 + (factor - 1) * x
                tt = t - sc.traffic_lag
                y = 0.0
                if onset <= tt < peak + 6 * 3600:
                    y = ((tt - onset) / sc.ramp) ** 2.5 if tt < peak else 0.5 ** ((tt - peak) / sc.decay_half_life)
                return mention, 1 + (factor ** self.elasticity - 1) * y
            if peak <= t - sc.traffic_lag < peak + 6 * 3600:  # the traffic tail after the mentions end
                y = 0.5 ** ((t - sc.traffic_lag - peak) / sc.decay_half_life)
                return 1.0, 1 + (factor ** self.elasticity - 1) * y
        return 1.0, 1.0

    def mention_counts(self) -> list[tuple[float, int]]:
        """(minute, mentions) from ``start`` to ``end``, seeded."""
        rng = np.random.default_rng(self.scenario.seed + 1)
        base = sum(self.scenario.baseline_per_min.values())
        out = []
        for t in range(int(self.start), int(self.end), 60):
            n = int(rng.poisson(base * self.diurnal(t) * self._surge_shape(t)[0]))
            if n:
                out.append((float(t), n))
        return out

    def traffic_rpm(self, t: float) -> float:
        """The site's requests/min over the history and the scripted day (seeded noise of a few %)."""
        sc = self.scenario
        if t >= self.end:
            return sc.traffic_rpm(t) * (0.7 + 0.3 * self.diurnal(t)) / (0.7 + 0.3 * self.diurnal(sc.start))
        shape = 0.7 + 0.3 * self.diurnal(t)
        noise = 1 + 0.03 * math.sin(t / 617.0) * math.cos(t / 2011.0)
        return sc.traffic_baseline_rpm * shape / (0.7 + 0.3 * self.diurnal(sc.start)) * self._surge_shape(t)[1] * noise

    def write(self, store: Any, traffic_csv: Path) -> int:
        """Backfill the store (as the RSS source's counts) and write the traffic CSV; the mentions written."""
        counts = self.mention_counts()
        day = 86400
        for lo in range(int(self.start), int(self.end), day):  # a day per call
            store.set_volume(BRAND, "rss", [(t, n) for t, n in counts if lo <= t < lo + day])
        with open(traffic_csv, "w", encoding="utf-8") as f:
            f.write("timestamp,requests_per_minute\n")
            for t in range(int(self.start), int(self.scenario.end), 60):
                f.write(f"{_iso(t)},{self.traffic_rpm(t):.0f}\n")
        return sum(n for _, n in counts)


class SimulatedFeeds:
    """``items_at`` for the feed server: what each feed shows at the simulated time now."""

    WINDOW = 20 * 60  # a feed lists the last 20 minutes of items (real feeds keep the newest N)
    MAX_ITEMS = 1000

    def __init__(self, scenario: Scenario, clock: SimClock):
        self.clock = clock
        self.start = scenario.start
        self.items = scenario.items()
        self.times = {path: np.array([i["published"].timestamp() for i in items]) for path, items in self.items.items()}

    def __call__(self, path: str) -> list[dict[str, Any]] | None:
        if path not in self.items:
            return None
        now = self.clock.now()
        if now < self.start:
            return []  # the simulated day has not begun: the feeds are empty (not yet published)
        times = self.times[path]
        lo = int(np.searchsorted(times, now - self.WINDOW, side="right"))
        hi = int(np.searchsorted(times, now, side="right"))
        lo = max(lo, hi - self.MAX_ITEMS)
        return list(reversed(self.items[path][lo:hi]))  # newest first, as feeds are

    def matching_posts(self, start: float, end: float) -> int:
        """Posts the collector should count, worked out independently of it: items whose title
        matches the demo query, published in [start, end], each story once across feeds."""
        from surgewatch.collectors.query import parse_query

        query = parse_query(QUERY)
        links = {
            item["link"]
            for items in self.items.values()
            for item in items
            if start <= item["published"].timestamp() <= end and query.matches(item["title"])
        }
        return len(links)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M")


APPRISE_URL_ENV = "SURGEWATCH_DEMO_APPRISE_URL_"


def secret_env(channels_from: Settings | None) -> dict[str, str]:
    """The secrets the demo's own config refers to by name (never written to its file)."""
    apprise = channels_from.channels.apprise if channels_from is not None else None
    if apprise is None:
        return {}
    return {f"{APPRISE_URL_ENV}{i}": url.get_secret_value() for i, url in enumerate(apprise.urls)}


def demo_config(folder: Path, feeds: list[str], channels_from: Settings | None) -> dict[str, Any]:
    channels: dict[str, Any] = {"console": {}}
    if channels_from is not None:
        # Secrets are not copied into the file: the worker reads them from the environment.
        channels.update(channels_from.channels.model_dump(
            exclude_none=True, exclude={"slack": {"token"}, "pagerduty": {"routing_key"}, "apprise": {"urls"}, "email": {"password"}}))
        if channels_from.channels.apprise is not None:
            # Apprise URLs hold tokens: the file names them as environment variables (see secret_env).
            channels["apprise"]["urls"] = [f"${{{APPRISE_URL_ENV}{i}}}" for i in range(len(channels_from.channels.apprise.urls))]
    elif os.environ.get("SLACK_BOT_TOKEN"):
        channels["slack"] = {
            "api_url": os.environ.get("SLACK_API_URL", "https://slack.com/api/"),
            "marketing_channel": os.environ.get("SURGEWATCH_DEMO_MARKETING_CHANNEL", "#marketing"),
            "ops_channel": os.environ.get("SURGEWATCH_DEMO_OPS_CHANNEL", "#ops"),
        }
    controls = [t.model_dump() for t in channels_from.traffic_controls] if channels_from is not None else []
    return {
        "traffic_controls": controls,
        "brands": [
            {
                "name": BRAND,
                "query": QUERY,
                "site": SITE,
                "runbook_url": "https://wiki.acme.example/runbooks/traffic-surge",
                "traffic": {"csv": str(folder / "traffic.csv")},
                "actions": ["Scale the web tier to 3x", "Switch on the waiting room"],
            }
        ],
        "sources": {"rss": {"interval": 120, "feeds": feeds}},
        "channels": channels,
        "store": {"url": f"sqlite:///{folder / 'surgewatch.db'}"},
        "broker": {"url": f"sqla+sqlite:///{folder / 'broker.db'}"},
        # A minute is scored once the feeds have been polled after it (the simulated clock runs
        # ~500x, so a worker's latency is minutes of simulated time): no extra lag is needed.
        "detector": {"bucket_seconds": 60, "warm_up_minutes": 90},
        "timezone": "UTC",
    }


def _backfill(config_path: Path, history: History, folder: Path) -> str:
    """Write the weeks before the scripted day and fit the traffic model on them (as the hourly beat
    task would), so the first alert already reads a calibrated model."""
    from surgewatch.config import load_settings
    from surgewatch.pipeline import Runtime
    from surgewatch.traffic import refresh_models

    from surgewatch.detector.spike import SpikeDetector

    rt = Runtime(load_settings(config_path))
    try:
        mentions = history.write(rt.store, folder / "traffic.csv")
        model = refresh_models(rt, history.scenario.start).get(BRAND, "")
        # The detector as weeks of running left it (its seasonal baseline learnt), scored in-process:
        # the past surges are history, not incidents to announce now.
        detector, bucket = SpikeDetector(rt.detector_params()), rt.settings.detector.bucket_seconds
        per_bucket = dict(history.mention_counts())
        end = int(history.end) // bucket * bucket
        for t in range(int(history.start), end, bucket):
            n = float(sum(per_bucket.get(float(m), 0) for m in range(t, t + bucket, 60)))
            detector.update(t, n, {"rss": n})
        rt.store.set_states({f"detector:{BRAND}": {"next_at": end, "detector": detector.state()},
                             f"scored:{BRAND}": {"next_at": end}})
    finally:
        rt.store.close()
    return f"{history.days} days of history ({mentions:,} mentions, {len(history.surges)} past surges; traffic model {model})"


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, flush=True)


def run_demo(*, as_json: bool, channels_from: Settings | None, real_seconds: float, keep: Path | None) -> int:
    scenario = Scenario()
    # absolute: the config written there names the store by path, for commands run from anywhere
    folder = Path(keep).resolve() if keep else Path(tempfile.mkdtemp(prefix="surgewatch-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("surgewatch.db", "surgewatch.db-wal", "surgewatch.db-shm", "broker.db", "surgewatch-beat-schedule",
                 "worker.log"):
        (folder / name).unlink(missing_ok=True)
    speed = (scenario.end - scenario.start) / real_seconds
    # A provisional clock for the feeds; the real one is set once the backfill is done.
    clock = SimClock(sim_start=scenario.start, real_start=time.time() + 3600.0, speed=speed)
    feeds = SimulatedFeeds(scenario, clock)
    server = FeedServer(items_at=feeds, title="Simulated news").start()
    worker: subprocess.Popen[bytes] | None = None
    try:
        config = demo_config(folder, [server.url(p) for p in scenario.baseline_per_min], channels_from)
        config_path = folder / "config.yaml"
        config_path.write_text("# written by `surgewatch demo`\n" + yaml.safe_dump(config, sort_keys=False))
        os.environ.update(secret_env(channels_from))  # for this process (backfill, report) and the worker
        backfilled = _backfill(config_path, History(scenario), folder)
        # The simulated day starts a few real seconds from now, once the worker is up (not counting
        # the backfill, which took its own time).
        clock = SimClock(sim_start=scenario.start, real_start=time.time() + 4.0, speed=speed)
        feeds.clock = clock
        _say(
            f"SurgeWatch demo: simulated {scenario.day:%A %Y-%m-%d} {_hhmm(scenario.start)}-{_hhmm(scenario.end)} UTC "
            f"at {speed:.0f}x, brand {BRAND} ({QUERY}), {len(feeds.items)} local feeds, after {backfilled}; "
            f"files in {folder}",
            as_json,
        )
        env = {**os.environ, CLOCK_ENV: clock.to_env(), "SURGEWATCH_CONFIG": str(config_path.resolve())}
        log = open(folder / "worker.log", "wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "surgewatch.cli.main", "run", "--config", str(config_path), "--concurrency", "2",
             "--loglevel", os.environ.get("SURGEWATCH_DEMO_LOGLEVEL", "WARNING"), "--data-dir", str(folder)],
            # From the demo's folder: `-m` puts the working directory first on the import path, and a
            # checkout's `surgewatch/` folder there would shadow the installed package.
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder,
        )
        last_report = 0.0
        while clock.now() < scenario.end:
            if worker.poll() is not None:
                print(f"error: the worker exited early with code {worker.returncode}; see {folder / 'worker.log'}",
                      file=sys.stderr)
                return 1
            time.sleep(0.2)
            if not as_json and time.time() - last_report > 5 and clock.now() > scenario.start:
                last_report = time.time()
                _say(f"  ... simulated {_hhmm(clock.now())}", as_json)
        # Let the last evaluation and notifications finish: until the delivery log has nothing in
        # flight (a loaded machine can leave the worker minutes of simulated time behind).
        time.sleep(3.0)
        _drain(config_path, worker, DRAIN_SECONDS)
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        server.stop()
    return _report(folder, config_path, scenario, feeds, as_json, keep is None)


DRAIN_SECONDS = 45.0  # at most this long (real time) for the notifications still in flight


def _drain(config_path: Path, worker: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait (at most ``seconds``) until no delivery is pending or being sent, twice in a row a
    second apart (an evaluate tick may be about to list more)."""
    from surgewatch.config import load_settings
    from surgewatch.pipeline import Runtime
    from surgewatch.store import StoreError

    rt = Runtime(load_settings(config_path))
    deadline, quiet = time.time() + seconds, 0
    try:
        while time.time() < deadline and worker.poll() is None:
            try:
                busy = any(d.status in ("pending", "claimed") for d in rt.store.list_deliveries())
            except StoreError:
                busy = True  # the worker holds the write lock a moment: look again
            quiet = 0 if busy else quiet + 1
            if quiet >= 2:
                return
            time.sleep(1.0)
    finally:
        rt.store.close()


def _report(folder: Path, config_path: Path, scenario: Scenario, feeds: SimulatedFeeds, as_json: bool,
            temporary: bool) -> int:
    from surgewatch.config import load_settings
    from surgewatch.ops.health import SourceHealth
    from surgewatch.notifier.escape import log_text
    from surgewatch.pipeline import Runtime
    from surgewatch.reports.deliveries import tally_deliveries
    from surgewatch.store.keys import delivery_key

    rt = Runtime(load_settings(config_path))
    store = rt.store
    incidents = sorted(store.list_incidents(brand=BRAND), key=lambda i: i["opened_at"])
    bucket = rt.settings.detector.bucket_seconds
    # What happened to every notification, as the delivery log recorded it (never recomputed).
    log = [d for inc in incidents for d in store.list_deliveries(inc["id"])]
    by_key = {d.key: d for d in log}
    alerts: list[dict[str, Any]] = []
    for inc in incidents:
        for tr in inc["transitions"]:
            v = tr["verdict"]
            # When the alert really went out (the console's delivery, on the simulated clock): the
            # bucket's close plus the evaluation lag and the queue.  Bucket close if it never went out.
            delivered = by_key.get(delivery_key(inc["id"], tr["no"], "console"))
            sent_at = delivered.sent_at if delivered is not None and delivered.status == "sent" else None
            alerts.append(
                {
                    "at": _iso(sent_at if sent_at else tr["at"] + bucket),
                    "bucket": _iso(tr["at"]),
                    "brand": inc["brand"],
                    "severity": tr["to"],
                    "event": tr["event"],
                    "incident": inc["id"],
                    "observed_per_min": round(v["observed"] * 60 / bucket, 1),
                    "expected_per_min": round(v["expected"] * 60 / bucket, 1),
                }
            )
    firing = [a for a in alerts if a["event"] != "resolved"]
    # The traffic outlook as the first alert carried it (the console's record of what it said).
    outlook = None
    for inc in incidents:
        for tr in inc["transitions"]:
            record = by_key.get(delivery_key(inc["id"], tr["no"], "console"))
            receipt = (record.receipt or {}) if record is not None and record.status == "sent" else {}
            if outlook is None and tr["event"] != "resolved" and receipt.get("traffic_outlook"):
                outlook = f"Site traffic: {receipt['traffic_outlook']}"
    first_alert = min((datetime.fromisoformat(a["at"]).timestamp() for a in firing), default=None)
    lead = scenario.traffic_peak - first_alert if first_alert is not None else None
    early = [a for a in firing if datetime.fromisoformat(a["at"]).timestamp() < scenario.onset]
    counts = store.counts(BRAND, scenario.start - SimulatedFeeds.WINDOW, scenario.end + 3600)  # not the backfill
    collected = sum(sum(series.values()) for series in counts.values())
    health = SourceHealth.load_all(store)
    # Every matching story the feeds ever list (the first poll, at 07:00 or later, sees their history).
    expected_posts = feeds.matching_posts(scenario.start - SimulatedFeeds.WINDOW, scenario.end)
    # Counted by the same function as the digest's scorecard, so the two cannot disagree.
    tally = tally_deliveries(log)
    statuses, by_channel, sent = tally.by_status, tally.by_channel, tally.sent
    failed = [d for d in log if d.status == "failed"]

    if not as_json:
        print()
        print(f"Alert timeline ({scenario.day:%A %Y-%m-%d}, UTC)")
        print(f"  {_hhmm(scenario.start)}  quiet baseline, about {sum(scenario.baseline_per_min.values()):.0f} mentions/min")
        events = [(scenario.onset, "  surge onset: the ticket launch is announced"),
                  (scenario.mention_peak, "  mention peak"),
                  (scenario.traffic_peak, f"  traffic peak at the site: {scenario.traffic_factor:.0f}x normal")]
        for a in alerts:
            t = datetime.fromisoformat(a["at"]).timestamp()
            label = "RESOLVED" if a["event"] == "resolved" else a["severity"].upper()
            events.append((t, f"{label:>9}  {a['brand']}: {a['observed_per_min']:.0f} mentions/min vs "
                              f"{a['expected_per_min']:.1f} expected ({a['incident']})"))
        for t, text in sorted(events, key=lambda e: e[0]):
            print(f"  {_hhmm(t)}{text}")
        if lead is not None:
            print(f"Lead: the first alert went out {lead / 60:.0f} minutes before the traffic peak.")
            print(f"Ops were told: {outlook or 'no traffic outlook (the model was not calibrated)'}")
        else:
            print("No alert fired.")
        print(f"Collected {collected} mentions of {BRAND} of {expected_posts} matching posts published "
              f"(noise and syndicated copies excluded); sources: {', '.join(f'{h.source}={h.status}' for h in health)}")
        print(f"Notifications sent: {sent} ({tally.alerts_sent} alerts, {tally.all_clears_sent} all-clear"
              f"{'s' if tally.all_clears_sent != 1 else ''}); not sent: {tally.not_sent_text()}")
        print("Deliveries: " + ("; ".join(
            f"{channel} " + ", ".join(f"{n} {status}" for status, n in sorted(per.items()))
            for channel, per in sorted(by_channel.items())) or "none"))
        for d in failed:
            print(f"  FAILED {d.channel} {d.event or ''} of {d.incident}: {log_text(d.error or '', 300)}",
                  file=sys.stderr)
        in_flight = statuses.get("pending", 0) + statuses.get("claimed", 0)
        if in_flight:
            print(f"  {in_flight} deliveries were still in flight when the demo stopped "
                  f"(the worker fell behind the simulated clock)", file=sys.stderr)
        if early:
            print(f"FAILED: {len(early)} alert(s) fired before the surge began", file=sys.stderr)
        if not temporary:
            first_id = incidents[0]["id"] if incidents else "INCIDENT_ID"
            print(f"The history is kept in {folder}. Look at it with:")
            print(f"  surgewatch incidents --config {config_path}")
            print(f"  surgewatch deliveries --config {config_path}")
            print(f"  surgewatch review {first_id} --config {config_path} --traffic {folder / 'traffic.csv'}")
            print(f"  surgewatch digest --week {scenario.day:%G-W%V} --config {config_path}")
    result = {
        "alerts": alerts,
        "surge_onset": _iso(scenario.onset),
        "mention_peak": _iso(scenario.mention_peak),
        "traffic_peak": _iso(scenario.traffic_peak),
        "first_alert": _iso(first_alert) if first_alert is not None else None,
        "lead_seconds": lead,
        "traffic_outlook": outlook,
        "mentions_collected": collected,
        "matching_posts_published": expected_posts,
        "notifications_sent": sent,
        "deliveries": statuses,
        "deliveries_by_channel": by_channel,
        "folder": str(folder),
    }
    rt.store.close()
    if temporary:
        shutil.rmtree(folder, ignore_errors=True)
    if as_json:
        print(json.dumps(result))
    return 1 if early or first_alert is None else 0
