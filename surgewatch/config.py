"""Typed configuration: YAML in, validated settings out.

Every error names the file, the key path and what was expected; unknown keys are rejected (a typo
in ``intervall`` must not silently fall back to a default).  Secrets never live in the file: a value
may be written ``${NAME}`` and is read from the environment, and credential fields are ``SecretStr``
so they print as ``**********``.
"""
from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from surgewatch.incidents.calendar import PlannedEvent

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A configuration problem.  ``errors`` holds one ``"key.path: message"`` line per problem."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


class Strict(BaseModel):
    # allow_inf_nan=False: ``.inf`` and ``.nan`` are YAML floats, and no setting means either
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _number_not_boolean(value: Any) -> Any:
    # pydantic's lax mode reads true as 1, so ``interval: true`` meant polling every second
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


def _strict_boolean(value: Any) -> Any:
    # true/false only (also as the text an environment variable gives): not 0, 1, "yes" or "off"
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


Int = Annotated[int, BeforeValidator(_number_not_boolean)]
Float = Annotated[float, BeforeValidator(_number_not_boolean)]
Bool = Annotated[bool, BeforeValidator(_strict_boolean)]


def brand_key(name: str) -> str:
    """The brand's name as it appears in beat entry names and file names: lower case, letters and
    digits, ``-`` for the rest.  Two brands with one key would share one beat entry (one of them
    never polled), so the config refuses such a pair."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


# -- brands -----------------------------------------------------------------------------------------
class PrometheusTrafficConfig(Strict):
    """Site traffic from Prometheus' HTTP API (``GET /api/v1/query_range``)."""

    url: str = Field(description="Prometheus' base URL, e.g. http://prometheus:9090 (or a proxy path in front of it)")
    query: str = Field(min_length=1, max_length=2000,
                       description="PromQL giving ONE series of requests per minute, e.g. sum(rate(http_requests_total[5m])) * 60")
    step_seconds: Int = Field(default=60, ge=10, le=3600, description="Resolution of the history")
    bearer_token: SecretStr | None = Field(default=None, description="Write ${ENV_NAME}: sent as Authorization: Bearer")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+\S*$", v):
            raise ValueError("must be an http(s) URL such as http://prometheus:9090")
        return v


class TrafficHistoryConfig(Strict):
    """Where the site's requests-per-minute history comes from: exactly one of ``csv`` and ``prometheus``."""

    csv: str | None = Field(default=None, min_length=1,
                            description="Path of a CSV of timestamp,requests_per_minute (relative: to the working directory)")
    prometheus: PrometheusTrafficConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "TrafficHistoryConfig":
        if (self.csv is None) == (self.prometheus is None):
            raise ValueError("set exactly one of csv (a file path) and prometheus (url, query)")
        return self


class BrandConfig(Strict):
    name: str = Field(min_length=1, max_length=100)
    query: str = Field(min_length=1, max_length=1000, description="Query language: terms, \"phrases\", OR, -exclusions")
    site: str | None = Field(default=None, description="The site that will take the traffic")
    runbook_url: str | None = None
    actions: list[str] = Field(default_factory=list, description="Suggested actions shown to ops")
    traffic: TrafficHistoryConfig | None = Field(
        default=None, description="The site's traffic history: calibrates 'about 6x normal traffic in ~25 min'"
    )
    sensitivity: Literal["fewer", "balanced", "more"] | None = Field(
        default=None,
        description="Alert rate calibrated on this brand's own history: fewer (about one alert a month), balanced "
                    "(about one a week), more (about three a week); unset: the fixed detector.*_decades thresholds",
    )

    @field_validator("query")
    @classmethod
    def _query_parses(cls, v: str) -> str:
        from surgewatch.collectors.query import QueryError, parse_query

        try:
            parse_query(v)
        except QueryError as exc:
            raise ValueError(f"invalid query: {exc}") from None
        return v

    @field_validator("site")
    @classmethod
    def _site_is_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL such as https://www.acme.example")
        return v


# -- sources ----------------------------------------------------------------------------------------
class SourceBase(Strict):
    enabled: Bool = True
    interval: Int = Field(default=60, ge=1, le=86400, description="Seconds between polls")
    timeout: Float = Field(default=10.0, gt=0, le=120)
    alert_after_minutes: Int = Field(
        default=15, ge=1, le=7 * 24 * 60, description="Tell ops once when this source has failed this long (and once when it recovers)"
    )
    max_wait_seconds: Int = Field(
        default=3600, ge=1, le=3600,
        description="Longest pause a 429's Retry-After or rate-limit reset may impose (collectors cap at an hour)",
    )


class RssSource(SourceBase):
    feeds: list[str] = Field(min_length=1)
    max_bytes: Int = Field(default=5_000_000, ge=1_000, le=100_000_000)

    @field_validator("feeds")
    @classmethod
    def _feeds_are_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not re.match(r"^https?://\S+$", url):
                raise ValueError(f"not an http(s) URL: {url!r}")
        return v


class GoogleNewsSource(SourceBase):
    interval: Int = Field(default=300, ge=1, le=86400)
    api_url: str = "https://news.google.com/rss/search"
    hl: str = "en-US"
    gl: str = "US"
    ceid: str = "US:en"


class XSource(SourceBase):
    api_url: str = "https://api.twitter.com"
    bearer_token: SecretStr | None = Field(default=None, description="Default: env X_BEARER_TOKEN")
    max_requests_per_day: Int = Field(
        default=400, ge=1, le=10_000_000,
        description="Budget for this source, shared by all brands (400: USD 2 a day at USD 0.005 a request)")
    max_results: Int = Field(default=100, ge=10, le=100)
    max_pages: Int = Field(default=3, ge=1, le=50)


class RedditSource(SourceBase):
    api_url: str = "https://oauth.reddit.com"
    auth_url: str = "https://www.reddit.com"
    subreddits: list[str] = Field(default_factory=list)
    comment_subreddits: list[str] = Field(default_factory=list)
    limit: Int = Field(default=100, ge=1, le=1000)


class HackerNewsSource(SourceBase):
    api_url: str = "https://hn.algolia.com/api/v1"
    hits_per_page: Int = Field(default=100, ge=1, le=1000)


class BlueskySource(SourceBase):
    api_url: str = "https://public.api.bsky.app"
    auth_url: str = "https://bsky.social"  # where BLUESKY_HANDLE / BLUESKY_APP_PASSWORD log in


class MastodonSource(SourceBase):
    api_url: str = "https://mastodon.social"
    hashtags: list[str] = Field(default_factory=list)


class Sources(Strict):
    rss: RssSource | None = None
    google_news: GoogleNewsSource | None = None
    x: XSource | None = None
    reddit: RedditSource | None = None
    hackernews: HackerNewsSource | None = None
    bluesky: BlueskySource | None = None
    mastodon: MastodonSource | None = None

    def enabled(self) -> dict[str, SourceBase]:
        return {name: cfg for name in type(self).model_fields if (cfg := getattr(self, name)) is not None and cfg.enabled}


# -- channels ---------------------------------------------------------------------------------------
class ConsoleChannelConfig(Strict):
    pass


class SlackChannelConfig(Strict):
    api_url: str = "https://slack.com/api/"
    token: SecretStr | None = Field(default=None, description="Default: env SLACK_BOT_TOKEN")
    marketing_channel: str | None = None
    ops_channel: str | None = None
    timeout: Float = Field(default=10.0, gt=0, le=60)
    # Who may press the buttons that change things (run a traffic control, silence, false alarm).
    # Unset: the members of ops_channel.  Acknowledge is open to everyone who sees the message.
    allowed_users: list[Annotated[str, Field(pattern=r"^[UW][A-Z0-9]{2,30}$")]] = Field(
        default_factory=list, description="Slack user ids (U...) allowed to press the action buttons")
    allowed_usergroups: list[Annotated[str, Field(pattern=r"^S[A-Z0-9]{2,30}$")]] = Field(
        default_factory=list, description="Slack user group ids (S...) whose members may press the action buttons")

    @model_validator(mode="after")
    def _needs_a_channel(self) -> "SlackChannelConfig":
        if not self.marketing_channel and not self.ops_channel:
            raise ValueError("set marketing_channel, ops_channel or both")
        return self


class PagerDutyChannelConfig(Strict):
    events_url: str = "https://events.pagerduty.com/v2/enqueue"
    routing_key: SecretStr | None = Field(default=None, description="Default: env PAGERDUTY_ROUTING_KEY")
    min_severity: Literal["watch", "warning", "critical"] = Field(
        default="critical", description="Page at once from this severity up"
    )
    page_unacked_warning_after_minutes: Int | None = Field(
        default=15, ge=0, le=7 * 24 * 60, description="Page a warning nobody acknowledged within this time (null: never)"
    )
    page_when_slack_fails: Bool = Field(default=True, description="Page ops if Slack fails permanently")
    timeout: Float = Field(default=10.0, gt=0, le=60)


class AppriseChannelConfig(Strict):
    """Alerts through Apprise to Teams, Discord, e-mail, Opsgenie, Telegram and 100+ more services."""

    urls: list[SecretStr] = Field(
        min_length=1, description="Apprise URLs, one per service; write tokens as ${ENV} (never in the file)")
    min_severity: Literal["watch", "warning", "critical"] = Field(
        default="watch", description="Alert from this severity up (the resolve follows if it alerted)")
    timeout: Float = Field(default=10.0, gt=0, le=60)

    @field_validator("urls")
    @classmethod
    def _apprise_knows_them(cls, v: list[SecretStr]) -> list[SecretStr]:
        import apprise

        for i, secret in enumerate(v):
            url = secret.get_secret_value()
            if not apprise.Apprise().add(url):
                shown = url.split("://", 1)[0] + "://..." if "://" in url else "(no scheme)"
                raise ValueError(f"urls[{i}]: {shown} is not a URL Apprise supports "
                                 "(see https://github.com/caronc/apprise/wiki)")
        return v


class EmailChannelConfig(Strict):
    """The weekly digest by e-mail (HTML with its chart inline, and plain text), and alerts from
    ``min_severity`` up when set."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    smtp_host: str = Field(min_length=1)
    smtp_port: Int = Field(default=587, ge=1, le=65535)
    starttls: Bool = Field(default=True, description="Upgrade the connection with STARTTLS before logging in")
    username: str | None = None
    password: SecretStr | None = Field(default=None, description="Default: env SMTP_PASSWORD")
    sender: str = Field(alias="from", description="The From address")
    to: list[str] = Field(min_length=1)
    min_severity: Literal["watch", "warning", "critical"] | None = Field(
        default=None, description="Alerts by e-mail from this severity up; null: the digest only")
    timeout: Float = Field(default=10.0, gt=0, le=60)

    @field_validator("sender", "to")
    @classmethod
    def _addresses(cls, v: Any) -> Any:
        for address in [v] if isinstance(v, str) else v:
            if not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+\.[^@\s<>,]+", address):
                raise ValueError(f"not an e-mail address: {address!r}")
        return v


class TrafficControl(Strict):
    """A webhook action (scale up, waiting room, cache warm-up) run at a severity and undone on resolve."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=50)
    url: str
    min_severity: Literal["watch", "warning", "critical"] = "warning"
    body: dict[str, Any] = Field(description="JSON body; {placeholders} take the incident's numbers")
    undo: dict[str, Any] | None = Field(default=None, description="JSON body sent when the incident resolves")
    dry_run: Bool = True
    approval: Bool = Field(default=False, description="Run only when a human clicks its button in Slack (not automatically)")
    secret_env: str = Field(default="SURGEWATCH_WEBHOOK_SECRET", description="Environment variable with the HMAC key")
    timeout: Float = Field(default=10.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://\S+$", v):
            raise ValueError("must be an http(s) URL")
        return v

    @field_validator("body", "undo")
    @classmethod
    def _known_placeholders(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        # checked here, so that check-config refuses what would otherwise fail when the webhook is built
        from surgewatch.notifier.webhook import KNOWN_PLACEHOLDERS, unknown_placeholders

        unknown = unknown_placeholders(v)
        if unknown:
            raise ValueError(f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                             f"known: {', '.join(KNOWN_PLACEHOLDERS)}")
        return v


class Channels(Strict):
    console: ConsoleChannelConfig | None = None
    slack: SlackChannelConfig | None = None
    pagerduty: PagerDutyChannelConfig | None = None
    apprise: AppriseChannelConfig | None = None
    email: EmailChannelConfig | None = None


# -- planned events -------------------------------------------------------------------------------
class PlannedEventConfig(Strict):
    """A ticket launch, a TV ad slot: the surge is expected.  ``start``/``end``: ISO 8601 with an
    offset, or local time in ``timezone`` (a local time the clocks skip or repeat is refused)."""

    brand: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=200)
    start: datetime | str
    end: datetime | str | None = None
    duration_minutes: Float | None = Field(default=None, gt=0, le=7 * 24 * 60)
    expected_peak_per_min: Float | None = Field(default=None, gt=0, le=1e12, description="Planned peak; pages only beyond bigger_factor x this")
    remind_before_minutes: Int = Field(default=60, ge=0, le=7 * 24 * 60)


class CalendarConfig(Strict):
    events: list[PlannedEventConfig] = Field(default_factory=list)
    lead_minutes: Int = Field(default=30, ge=0, le=24 * 60, description="An event is active from this long before its start")
    bigger_factor: Float = Field(default=2.0, gt=1, le=1000, description="Page when observed > this x expected_peak_per_min")


# -- infrastructure ---------------------------------------------------------------------------------
class StoreConfig(Strict):
    url: str = "sqlite:///surgewatch.db"
    # Posts older than two days are never counted (pipeline.MAX_MENTION_AGE), so remembering ids for
    # longer buys nothing and costs most of a brand's Redis memory (benchmarks/surge.py).
    dedup_ttl_days: Float = Field(default=3, ge=2, le=365, description="How long a post's id is remembered (at least the 2 days after which posts are not counted)")
    recent_cap: Int = Field(default=500, ge=10, le=100_000)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not re.match(r"^(sqlite:///|redis://|rediss://|unix://)", v):
            raise ValueError("must start with sqlite:///, redis://, rediss:// or unix://")
        return v


class BrokerConfig(Strict):
    url: str = "sqla+sqlite:///surgewatch-broker.db"

    @field_validator("url")
    @classmethod
    def _not_memory(cls, v: str) -> str:
        if v.startswith("memory://"):
            raise ValueError(
                "memory:// cannot work: `worker -B` runs beat in a child process whose tasks the worker never sees; "
                "use sqla+sqlite:///file.db (embedded) or redis://..."
            )
        return v


class DetectorConfig(Strict):
    bucket_seconds: Int = Field(default=60, ge=10, le=3600, description="Width of a counting bucket")
    open_severity: Literal["watch", "warning", "critical"] = Field(
        default="watch", description="Lowest severity that opens an incident"
    )
    resolve_after_quiet_buckets: Int = Field(default=10, ge=1, le=10_000)
    # the surprise (decades of improbability: 5 = a one-in-100,000 bucket) that each level needs, with the ratio to
    # the baseline; unset: the detector's defaults (5, 7, 10).  Lower opens incidents sooner and more often
    watch_decades: Float | None = Field(default=None, ge=1.0, le=40.0, description="Surprise that opens a watch")
    warning_decades: Float | None = Field(default=None, ge=1.0, le=40.0, description="Surprise of a warning")
    critical_decades: Float | None = Field(default=None, ge=1.0, le=40.0, description="Surprise of a critical")

    @model_validator(mode="after")
    def _levels_in_order(self) -> "DetectorConfig":
        from surgewatch.detector.spike import DetectorParams

        d = DetectorParams()
        levels = [v if v is not None else getattr(d, k)
                  for k, v in (("watch_decades", self.watch_decades), ("warning_decades", self.warning_decades),
                               ("critical_decades", self.critical_decades))]
        if not levels[0] <= levels[1] <= levels[2]:
            raise ValueError(f"watch_decades <= warning_decades <= critical_decades expected, got "
                             f"{levels[0]:g}, {levels[1]:g}, {levels[2]:g} (unset ones are 5, 7, 10)")
        return self
    warm_up_minutes: Int | None = Field(
        default=None, ge=0, le=30 * 24 * 60, description="No alerts until this much history is scored (default: the detector's, 6 hours)"
    )
    evaluation_lag_seconds: Int | None = Field(
        default=None, ge=0, le=86400,
        description="A bucket is scored once every working source has polled after it closed, plus this much (default 0)",
    )


class RouteConfig(Strict):
    """One route (Alertmanager's word): transitions of these brands, from this severity up, go to
    these channels.  A transition goes to every channel of every route it matches."""

    brands: list[str] = Field(default_factory=list, description="Empty: every brand")
    min_severity: Literal["watch", "warning", "critical"] = "watch"
    channels: list[str] = Field(min_length=1, description="console, slack, pagerduty, webhook:<name>")


class RoutingConfig(Strict):
    group_wait_seconds: Int = Field(
        default=0, ge=0, le=3600,
        description="Hold an incident's first notification this long: if it escalates meanwhile, one message says so",
    )
    repeat_interval_minutes: Int | None = Field(
        default=240, ge=1, le=30 * 24 * 60, description="Remind chat channels of an open, unacknowledged incident this often (null: never)"
    )
    send_resolved: Bool = Field(default=True, description="Tell channels when an incident resolves")
    routes: list[RouteConfig] = Field(default_factory=list, description="Empty: every channel hears every transition")


class DigestConfig(Strict):
    """The weekly trend digest (Celery beat crontab in the configured time zone)."""

    enabled: Bool = True
    day_of_week: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "mon"
    hour: Int = Field(default=9, ge=0, le=23)
    minute: Int = Field(default=0, ge=0, le=59)
    timezone: str | None = Field(default=None, description="Default: the top-level timezone")
    channel: str | None = Field(default=None, description="Slack channel for the digest (default: marketing_channel)")
    out_dir: str | None = Field(default=None, description="Also write HTML and Markdown here")


class OpsConfig(Strict):
    """Watching the watcher: when ``/healthz`` and ``status`` call the pipeline stale, and an optional
    dead-man's switch pinged after each healthy evaluate tick."""

    stale_after_seconds: Int | None = Field(
        default=None, ge=10, le=7 * 86400,
        description="Beat, workers and evaluate ticks older than this are stale (default: 3 x the longest of "
                    "the bucket and the poll intervals)",
    )
    heartbeat_url: str | None = Field(
        default=None,
        description="Pinged (GET) after each healthy evaluate tick, e.g. a healthchecks.io check URL: it alerts "
                    "when the pings stop, also when SurgeWatch dies with its host",
    )
    heartbeat_timeout: Float = Field(default=5.0, gt=0, le=60)
    # The dashboard at / (read-only).  /metrics and /healthz stay open for scrapers and probes.
    dashboard_token: SecretStr | None = Field(
        default=None, description="Require 'Authorization: Bearer <token>' for the dashboard (default: env "
                                  "SURGEWATCH_DASHBOARD_TOKEN; neither: no token needed)")
    dashboard_user: str | None = Field(
        default=None, description="Require HTTP basic auth for the dashboard as this user, with the password "
                                  "in env SURGEWATCH_DASHBOARD_PASSWORD")

    @field_validator("heartbeat_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+\S*$", v):
            raise ValueError("must be an http(s) URL such as https://hc-ping.com/<uuid>")
        return v


class Settings(Strict):
    brands: list[BrandConfig] = Field(min_length=1)
    sources: Sources = Field(default_factory=Sources)
    channels: Channels = Field(default_factory=lambda: Channels(console=ConsoleChannelConfig()))
    store: StoreConfig = Field(default_factory=StoreConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    traffic_controls: list[TrafficControl] = Field(default_factory=list)
    digest: DigestConfig = Field(default_factory=DigestConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    calendar: CalendarConfig = Field(default_factory=CalendarConfig)
    ops: OpsConfig = Field(default_factory=OpsConfig)
    timezone: str = "UTC"

    @field_validator("brands")
    @classmethod
    def _unique_names(cls, v: list[BrandConfig]) -> list[BrandConfig]:
        seen: set[str] = set()
        for b in v:
            if b.name.casefold() in seen:
                raise ValueError(f"duplicate brand name {b.name!r}")
            seen.add(b.name.casefold())
        keys: dict[str, str] = {}
        for b in v:
            key = brand_key(b.name)
            if not key:
                raise ValueError(f"brand name {b.name!r} has no letter or digit (its schedule key would be empty)")
            if key in keys:
                raise ValueError(f"brands {keys[key]!r} and {b.name!r} share the key {key!r} (beat would poll only "
                                 "one of them): rename one")
            keys[key] = b.name
        return v

    def stale_after_seconds(self) -> float:
        """How old a heartbeat may be before ``/healthz`` calls it stale."""
        if self.ops.stale_after_seconds is not None:
            return float(self.ops.stale_after_seconds)
        intervals = [s.interval for s in self.sources.enabled().values()]
        return 3.0 * max([self.detector.bucket_seconds, *intervals])

    @field_validator("traffic_controls")
    @classmethod
    def _unique_controls(cls, v: list[TrafficControl]) -> list[TrafficControl]:
        names = [c.name for c in v]
        if len(names) != len(set(names)):
            raise ValueError("traffic control names must be unique")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/London)") from None
        return v

    @model_validator(mode="after")
    def _routes_name_known_things(self) -> "Settings":
        channels = set(configured_channels(self))
        brands = {b.name.casefold() for b in self.brands}
        for i, r in enumerate(self.routing.routes):
            unknown = [c for c in r.channels if c not in channels]
            if unknown:
                raise ValueError(f"routing.routes[{i}].channels: {', '.join(unknown)} not configured "
                                 f"(configured: {', '.join(sorted(channels)) or 'none'})")
            missing = [b for b in r.brands if b.casefold() not in brands]
            if missing:
                raise ValueError(f"routing.routes[{i}].brands: unknown brand(s) {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _calendar_loads(self) -> "Settings":
        from surgewatch.incidents.calendar import CalendarError, load_calendar

        names = {b.name.casefold() for b in self.brands}
        unknown = sorted({e.brand for e in self.calendar.events if e.brand.casefold() not in names})
        if unknown:
            raise ValueError(f"calendar.events: unknown brand(s) {', '.join(map(repr, unknown))}")
        try:
            load_calendar([e.model_dump(exclude_none=True) for e in self.calendar.events], self.timezone)
        except CalendarError as exc:
            raise ValueError("; ".join(e.replace("calendar[", "calendar.events[", 1) for e in exc.errors)) from None
        return self

    def planned_events(self) -> "list[PlannedEvent]":
        from surgewatch.incidents.calendar import load_calendar

        return load_calendar([e.model_dump(exclude_none=True) for e in self.calendar.events], self.timezone)

    def brand(self, name: str) -> BrandConfig:
        for b in self.brands:
            if b.name.casefold() == name.casefold():
                return b
        raise KeyError(f"no brand named {name!r} in the config (brands: {', '.join(b.name for b in self.brands)})")


# -- loading ----------------------------------------------------------------------------------------
def _expand_env(node: Any, path: str, env: dict[str, str], errors: list[str]) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in string values; a missing variable is an error."""
    if isinstance(node, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k), env, errors) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, f"{path}[{i}]", env, errors) for i, v in enumerate(node)]
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            errors.append(f"{path}: environment variable {name} is not set")
            return ""

        return ENV_PATTERN.sub(sub, node)
    return node


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see config/example.yaml)"
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def parse_settings(data: Any, source: str = "<config>", env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    if data is None:
        raise ConfigError(source, ["(top level): the file is empty; see config/example.yaml"])
    if not isinstance(data, dict):
        raise ConfigError(source, [f"(top level): expected a mapping of keys, got {type(data).__name__}"])
    errors: list[str] = []
    data = _expand_env(data, "", env, errors)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = _loc(tuple(err["loc"])) or "(top level)"
            errors.append(f"{loc}: {_message(err)}")
        raise ConfigError(source, errors) from None
    if errors:
        raise ConfigError(source, errors)
    _register_secrets(settings)
    return settings


def _register_secrets(node: Any) -> None:
    """Hand every secret of the config to the redactor: a token written as ``${MY_TOKEN}`` (any
    variable name) and the passwords of the store and broker URLs never reach a log or an error."""
    from urllib.parse import parse_qsl, urlsplit

    from surgewatch.redact import SECRET_PARAM, register_secret

    if isinstance(node, SecretStr):
        register_secret(node.get_secret_value())
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            _register_secrets(getattr(node, name))
    elif isinstance(node, (list, tuple)):
        for item in node:
            _register_secrets(item)
    elif isinstance(node, str) and "://" in node:
        try:
            parts = urlsplit(node)
            register_secret(parts.password)
            for key, value in parse_qsl(parts.query):
                if SECRET_PARAM.search(key):
                    register_secret(value)
        except ValueError:
            pass


# A real config has a few thousand values (1000 brands x 5 keys); a document whose aliases expand
# past this is refused before anything is copied ("billion laughs": 500 bytes of nested aliases
# expanded past 720 MB while the environment variables were substituted).
MAX_EXPANDED_NODES = 200_000
MAX_CONFIG_BYTES = 10_000_000


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (the last one used to win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *defaults" then an override of one of them is the point of a merge
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeConstructor reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes the document has once every alias is expanded, counting no further than
    ``limit``.  Aliases share node objects, so this memoises per node: linear in the file's size."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in on_path:  # "&a [*a]": infinitely large once expanded
            return limit + 1
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            on_path.add(id(node))
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            for child in children:
                total += size(child)
                if total > limit:
                    break
            on_path.discard(id(node))
        sizes[id(node)] = total = min(total, limit + 1)
        return total

    return size(root)


def load_yaml(text: str, source: str) -> Any:
    """Parse a config document: YAML errors, duplicate keys and alias bombs are ConfigErrors."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(source, [f"(top level): the file is larger than {MAX_CONFIG_BYTES // 1_000_000} MB"])
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_EXPANDED_NODES) > MAX_EXPANDED_NODES:
            raise ConfigError(source, [
                f"(top level): the document expands to more than {MAX_EXPANDED_NODES} values once its "
                "aliases (*name) are expanded; refusing it (nested aliases?)"])
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise ConfigError(source, [f"{kind} at {where}: {problem}"]) from None
    except RecursionError:
        raise ConfigError(source, ["(top level): the document is nested too deeply"]) from None
    finally:
        loader.dispose()


def load_settings(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Settings:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.__class__.__name__}: {exc}"]) from None
    return parse_settings(load_yaml(text, str(p)), str(p), env)


def secret_from(field: SecretStr | None, env_name: str, env: dict[str, str] | None = None) -> str | None:
    """The secret in the config (already ``${...}``-expanded) or, failing that, the environment."""
    if field is not None and field.get_secret_value():
        return field.get_secret_value()
    env = os.environ if env is None else env
    value = env.get(env_name)
    return value or None


def configured_channels(settings: Settings) -> list[str]:
    """The names of the configured channels: ``console``, ``slack``, ``pagerduty`` and one
    ``webhook:<name>`` per traffic control."""
    c = settings.channels
    names = [name for name in type(c).model_fields if getattr(c, name) is not None]
    if c.email is not None and c.email.min_severity is None:
        names.remove("email")  # the digest only: no alerts by e-mail
    return names + [f"webhook:{t.name}" for t in settings.traffic_controls]


def channel_config(settings: Settings, name: str) -> Any:
    """The config section of a channel by its name (``webhook:<name>`` for a traffic control), or
    None.  What routing and delivery read of any channel: ``min_severity`` and ``timeout``, if it has them."""
    kind, _, instance = name.partition(":")
    if kind == "webhook":
        return next((t for t in settings.traffic_controls if t.name == instance), None)
    return getattr(settings.channels, kind, None) if not instance and kind in type(settings.channels).model_fields else None

