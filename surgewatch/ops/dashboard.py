"""The ops server's ``/``: a read-only page for people -- each brand's mention rate against its
expected band over the last 24 hours, open and recent incidents with their timeline, source health
and API spend, and the latest deliveries.  Read from the store alone (no Celery), rendered with the
reports' Jinja2 toolkit (every outside string escaped), charts inline: the page fetches nothing."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from scipy.stats import poisson

from surgewatch.config import Settings
from surgewatch.detector.spike import SpikeDetector
from surgewatch.ops.health import SourceHealth
from surgewatch.reports.charts import band_chart
from surgewatch.reports.html import render_page
from surgewatch.store.base import Store
from surgewatch.store.keys import verdict_key

WINDOW = 24 * 3600.0
WARM_UP = 7 * 86400.0  # the detector replays a week before the window, so its baseline is the real one
MAX_CHARTS = 12  # brands with an open incident first; the others get a table row
CACHE_SECONDS = 60.0
RECENT_INCIDENTS = 7 * 86400.0
X_PRICE_PER_REQUEST = 0.005  # USD, as the README documents; X is the source billed per request


@dataclass
class BrandView:
    name: str
    latest: str
    open_incident: str | None
    chart_png: bytes | None


def expected_band(settings: Settings, brand: str, counts: dict[float, float], start: float,
                  end: float) -> list[tuple[float, float, float, float]]:
    """(bucket, observed, band low, band high) for every bucket of [start, end): the brand's detector
    replayed over the week before and the window (its expected level per bucket), with the Poisson 99%
    band around it."""
    from surgewatch.pipeline.runtime import Runtime

    bucket = settings.detector.bucket_seconds
    detector = SpikeDetector(Runtime(settings).detector_params(brand))
    first = min(counts, default=start)
    out = []
    t = math.floor(max(first, start - WARM_UP) / bucket) * bucket
    while t < end:
        n = float(counts.get(t, 0.0))
        v = detector.update(t, n, {"all": n})
        if t >= start:
            expected = max(v.expected, 1e-9)
            out.append((t, n, float(poisson.ppf(0.005, expected)), float(poisson.ppf(0.995, expected))))
        t += bucket
    return out


class Dashboard:
    """Builds the page, one at a time, cached for ``CACHE_SECONDS`` (a brand's chart costs a replay of
    its week: ~0.2 s)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._cached: tuple[float, str] | None = None

    def page(self, store: Store, now: float) -> str:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            html = self.render(store, now)
            self._cached = (time.monotonic(), html)
            return html

    def _when(self, ts: float | None) -> str:
        if ts is None:
            return "—"
        return datetime.fromtimestamp(float(ts), ZoneInfo(self.settings.timezone)).strftime("%a %d %b %H:%M")

    def render(self, store: Store, now: float) -> str:
        s = self.settings
        per_min = 60.0 / s.detector.bucket_seconds
        names = [b.name for b in s.brands]
        open_incidents = store.open_incidents(names)
        verdicts = dict(zip(names, store.get_states([verdict_key(n) for n in names])))
        brands: list[BrandView] = []
        for i, name in enumerate(sorted(names, key=lambda n: (n not in open_incidents, n.casefold()))):
            v = verdicts.get(name)
            latest = (f"{v.get('observed', 0) * per_min:.0f} mentions/min against {v.get('expected', 0) * per_min:.1f} "
                      f"expected: {v.get('severity', 'quiet')}") if v else "no verdict yet"
            chart = None
            if i < MAX_CHARTS:
                series: dict[float, float] = {}
                for points in store.counts(name, now - WINDOW - WARM_UP, now).values():
                    for t, n in points.items():
                        series[float(t)] = series.get(float(t), 0.0) + float(n)
                rows = expected_band(s, name, series, now - WINDOW, now)
                chart = band_chart(rows, bucket_seconds=s.detector.bucket_seconds, tz=s.timezone,
                                   title=f"{name}: the last 24 hours")
            inc = open_incidents.get(name)
            brands.append(BrandView(name, latest, inc["id"] if inc else None, chart))
        recent = store.list_incidents(since=now - RECENT_INCIDENTS)
        still_open = [i for i in open_incidents.values() if i["id"] not in {r["id"] for r in recent}]
        incidents = (still_open + recent)[:20]
        incident_rows = [
            (i["id"], i["brand"], i["status"], i["severity"], self._when(i["opened_at"]),
             " → ".join(f"{self._when(t['at'] + s.detector.bucket_seconds)[-5:]} {t['to'] if t['event'] != 'resolved' else 'resolved'}"
                        for t in i["transitions"] if t["event"] in ("opened", "escalated", "resolved", "paged")),
             i.get("acked_by") or "—")
            for i in incidents]
        health_rows = []
        for h in sorted(SourceHealth.load_all(store), key=lambda h: (h.brand, h.source)):
            spend = f"USD {h.requests * X_PRICE_PER_REQUEST:.2f}" if h.source == "x" else "free"
            health_rows.append((h.brand, h.source, h.status, self._when(h.last_success), (h.last_error or "")[:160],
                                f"{h.polls:,}", f"{h.requests:,}", spend))
        deliveries = sorted((d for inc in incidents for d in store.list_deliveries(inc["id"])),
                            key=lambda d: -(d.updated_at or d.created_at or 0))[:30]
        delivery_rows = [(d.incident, f"#{d.transition} {d.event or ''}", d.channel, d.status, str(d.attempts),
                          self._when(d.sent_at or d.updated_at), (d.error or d.reason or "")[:160]) for d in deliveries]
        return render_page("dashboard.html", brands=brands, now=self._when(now), tz=s.timezone,
                           incident_rows=incident_rows, health_rows=health_rows, delivery_rows=delivery_rows,
                           x_price=X_PRICE_PER_REQUEST)
