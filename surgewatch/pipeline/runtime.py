"""The per-process container every stage takes: settings plus lazily built store, collectors and
channels."""
from __future__ import annotations

from typing import Any

from surgewatch.collectors.base import BrandSpec, Collector
from surgewatch.config import BrandConfig, Settings, channel_config
from surgewatch.detector.spike import SENSITIVITY_ALARMS_PER_WEEK, DetectorParams
from surgewatch.notifier.base import Channel
from surgewatch.ops.health import SourceHealth
from surgewatch.registry import build_channel, build_collector
from surgewatch.store import open_store
from surgewatch.store.base import Store

NOTIFY_LEASE = 120.0  # a claim's lease when a channel states no timeout (and for approved traffic controls)


class NotReady(Exception):
    """Not yet: a later notification waits for the incident's first message on the same channel
    (it must update and thread under it), or another attempt holds the claim.  The task retries
    in ``retry_in`` seconds."""

    def __init__(self, message: str, retry_in: float = 1.0):
        super().__init__(message)
        self.retry_in = retry_in


class Runtime:
    """Settings plus lazily built store, collectors and channels (one per process)."""

    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self._store = store
        self._collectors: dict[str, Collector] = {}
        self._channels: dict[str, Channel] = {}
        self._brands: dict[str, BrandConfig] | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            s = self.settings
            self._store = open_store(
                s.store.url,
                bucket_seconds=s.detector.bucket_seconds,
                dedup_ttl=s.store.dedup_ttl_days * 86400,
                recent_cap=s.store.recent_cap,
            )
        return self._store

    def collector(self, name: str) -> Collector:
        if name not in self._collectors:
            self._collectors[name] = build_collector(self.settings, name)
        return self._collectors[name]

    def channel(self, name: str) -> Channel:
        if name not in self._channels:
            self._channels[name] = build_channel(self.settings, name, self.store)
        return self._channels[name]

    def brand(self, name: str) -> BrandConfig:
        """The brand's config by name, case-insensitively (a dict: a tick looks up a thousand)."""
        if self._brands is None:
            self._brands = {b.name.casefold(): b for b in self.settings.brands}
        found = self._brands.get(name.casefold())
        return found if found is not None else self.settings.brand(name)  # raises, naming the brands

    def scoring_horizon(self, brand: str, now: float, health: dict[str, dict[str, Any] | None] | None = None) -> float:
        """The time up to which the brand's counts are complete: ``evaluation_lag`` ago, and not
        past the last successful poll of any working source (a bucket scored before its poll has
        landed would read as a drop to zero), or for a census source (X) its last counts.  A source
        that has not got that far for three intervals is stalled or failing and no longer holds
        scoring back (its health alert covers it).
        ``health``: the sources' health states by ``SourceHealth.key``, when already read."""
        enabled = self.settings.sources.enabled()
        if health is None:
            keys = [SourceHealth.key(source, brand) for source in enabled]
            health = dict(zip(keys, self.store.get_states(keys)))
        horizon = now - self.evaluation_lag()
        for source, cfg in enabled.items():
            h = health.get(SourceHealth.key(source, brand)) or {}
            # a census source (X) is complete up to its last counts, not its last poll
            complete = h.get("complete_until") if h.get("complete_every") else h.get("last_success")
            if not complete:
                continue
            every = max(cfg.interval, h.get("complete_every") or 0)
            if complete >= now - 3 * every - self.evaluation_lag():  # not stalled
                horizon = min(horizon, complete)
        return horizon

    def notify_lease(self, channel: str) -> float:
        """How long a claimed delivery stays ours: longer than one send can take (three request
        timeouts -- Slack's two audiences and a chart -- plus pacing), so a live sender is never
        taken over, and short enough that a send that died is redone soon."""
        if channel == "console":
            return 1.0 * 3 + 10
        cfg = channel_config(self.settings, channel)
        timeout: float | None = getattr(cfg, "timeout", None)
        if timeout is not None:
            timeout *= max(1, len(getattr(cfg, "urls", None) or ()))  # several services, one after the other
        return NOTIFY_LEASE if timeout is None else 3 * timeout + 10

    def brand_spec(self, brand: str) -> BrandSpec:
        b = self.brand(brand)
        return BrandSpec(name=b.name, query=b.query, site=b.site)

    def detector_params(self, brand: str | None = None) -> DetectorParams:
        """The detector's parameters from ``detector:``, and for ``brand`` its ``sensitivity`` (a target alarm
        rate the detector calibrates on the brand's own history)."""
        d = self.settings.detector
        warm_up = None if d.warm_up_minutes is None else max(1, d.warm_up_minutes * 60 // d.bucket_seconds)
        thresholds = {k: v for k in ("watch_decades", "warning_decades", "critical_decades")
                      if (v := getattr(d, k)) is not None}
        sensitivity = self.brand(brand).sensitivity if brand is not None else None
        rate = SENSITIVITY_ALARMS_PER_WEEK[sensitivity] if sensitivity is not None else None
        return DetectorParams(bucket_seconds=d.bucket_seconds, warm_up_buckets=warm_up, alarms_per_week=rate,
                              **thresholds)

    def evaluation_lag(self) -> float:
        """Extra wait after a bucket is complete (every working source has polled past it) before
        it is scored, for sources that publish late; 0 unless configured."""
        lag = self.settings.detector.evaluation_lag_seconds
        return float(lag) if lag is not None else 0.0
