"""Planned events: a ticket launch at 09:00 on Friday, a TV ad slot, a newsletter going out.

A surge during one of them is expected: ops get a reminder before it starts, and an incident that
opens while it runs says "planned: <name>" instead of paging -- unless the surge is far bigger than
planned (``bigger_factor`` x the expected peak), which is exactly when a human must look.

Pure functions over plain values (no store, no clock reads), like the detector: the pipeline passes
the time in.  Times in the calendar are either ISO 8601 with an offset (``2026-10-23T09:00:00+01:00``)
or local wall-clock time in the configured zone (``2026-10-23 09:00``), converted with the zone's
rules for that date, so "09:00" stays 09:00 on both sides of a daylight-saving change.  A local
time the clocks skip (spring forward) or pass twice (fall back) is refused with a message asking
for an explicit offset: a TV slot at an ambiguous 01:30 is a planning mistake to fix, not to guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, Iterable, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LEAD_MINUTES = 30  # mentions start before the slot: the teaser, the queue forming
BIGGER_FACTOR = 2.0
Assessment = Literal["expected", "bigger_than_planned"]


class CalendarError(ValueError):
    """A calendar entry that cannot be used.  ``errors`` holds one ``"calendar[i].key: message"`` per problem."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    brand: str
    name: str
    start: datetime  # timezone-aware (UTC)
    end: datetime  # timezone-aware (UTC), after start
    expected_peak_per_min: float | None = None  # mentions per minute at the peak; None: size unknown
    remind_before_minutes: int = 60

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("PlannedEvent times must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"planned event {self.name!r} ends before it starts")

    @property
    def key(self) -> str:
        """Stable identity: the same entry gives the same key after a restart or a config reload."""
        return f"{self.brand}:{self.name}:{self.start.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"

    @property
    def reminder_key(self) -> str:
        return f"calendar:reminder:{self.key}"

    def covers(self, at: datetime, lead_minutes: float = LEAD_MINUTES) -> bool:
        return self.start - timedelta(minutes=lead_minutes) <= at <= self.end


@dataclass(frozen=True, slots=True)
class Reminder:
    event: PlannedEvent
    key: str  # claim it in the store before sending, so two workers send it once
    minutes_before: float  # how long before the start it is sent (less than asked if we were late)


# -- loading ---------------------------------------------------------------------------------------
def _zone(tz: str | tzinfo) -> tzinfo:
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise CalendarError([f"timezone: unknown time zone {tz!r} (use an IANA name such as Europe/London)"]) from None


def localize(naive: datetime, zone: tzinfo) -> datetime:
    """Wall-clock time in ``zone`` -> aware UTC.  Refuses times that do not exist or happen twice.

    zoneinfo never raises for those: ``fold`` picks one of the two readings.  Converting with both
    folds and comparing tells the three cases apart (PEP 495)."""
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first.astimezone(timezone.utc)
    utc_first, utc_second = first.astimezone(timezone.utc), second.astimezone(timezone.utc)
    # A gap: the time maps to an instant whose local reading is a different wall-clock time.
    if utc_first.astimezone(zone).replace(tzinfo=None) != naive:
        raise ValueError(f"{naive:%Y-%m-%d %H:%M} does not exist in {zone} (the clocks skip it); "
                         "give the time with an offset")
    raise ValueError(f"{naive:%Y-%m-%d %H:%M} happens twice in {zone} (the clocks go back); give the offset, "
                     f"e.g. {_with_offset(utc_first, zone)} or {_with_offset(utc_second, zone)}")


def _with_offset(utc: datetime, zone: tzinfo) -> str:
    return utc.astimezone(zone).isoformat(timespec="minutes")


def parse_time(value: Any, zone: tzinfo) -> datetime:
    """ISO 8601 text (or a datetime, as YAML hands over unquoted timestamps) -> aware UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"cannot read {value!r}: use ISO 8601, e.g. 2026-10-23T09:00 or 2026-10-23T09:00+01:00") from None
    else:
        raise ValueError(f"expected an ISO 8601 time, got {type(value).__name__}")
    if parsed.tzinfo is None:
        return localize(parsed, zone)
    return parsed.astimezone(timezone.utc)


def load_calendar(entries: Iterable[dict[str, Any]], tz: str | tzinfo = "UTC") -> list[PlannedEvent]:
    """Calendar entries (``brand``, ``name``, ``start``, ``end`` or ``duration_minutes``,
    ``expected_peak_per_min``, ``remind_before_minutes``) -> events sorted by start.
    Every problem is reported at once, each with its entry's index and key."""
    zone = _zone(tz)
    events: list[PlannedEvent] = []
    errors: list[str] = []
    known = {"brand", "name", "start", "end", "duration_minutes", "expected_peak_per_min", "remind_before_minutes"}
    for i, entry in enumerate(entries):
        where = f"calendar[{i}]"
        if not isinstance(entry, dict):
            errors.append(f"{where}: expected a mapping with brand, name, start and end")
            continue
        problems: list[str] = [f"{where}.{k}: unknown key" for k in sorted(set(entry) - known)]
        for k in ("brand", "name", "start"):
            if not entry.get(k):
                problems.append(f"{where}.{k}: field required")
        start = end = None
        if entry.get("start"):
            try:
                start = parse_time(entry["start"], zone)
            except ValueError as exc:
                problems.append(f"{where}.start: {exc}")
        if entry.get("end") is not None and entry.get("duration_minutes") is not None:
            problems.append(f"{where}: give end or duration_minutes, not both")
        elif entry.get("end") is not None:
            try:
                end = parse_time(entry["end"], zone)
            except ValueError as exc:
                problems.append(f"{where}.end: {exc}")
        elif entry.get("duration_minutes") is not None:
            minutes = _number(entry["duration_minutes"], f"{where}.duration_minutes", problems, positive=True)
            if start is not None and minutes is not None:
                end = start + timedelta(minutes=minutes)  # elapsed minutes: right across a DST change
        else:
            problems.append(f"{where}: end or duration_minutes required")
        if start is not None and end is not None and end <= start:
            problems.append(f"{where}.end: must be after the start")
        peak = entry.get("expected_peak_per_min")
        if peak is not None:
            peak = _number(peak, f"{where}.expected_peak_per_min", problems, positive=True)
        remind = entry.get("remind_before_minutes", 60)
        remind_n = _number(remind, f"{where}.remind_before_minutes", problems, positive=False)
        if problems:
            errors.extend(problems)
            continue
        assert start is not None and end is not None
        events.append(PlannedEvent(brand=str(entry["brand"]), name=str(entry["name"]), start=start, end=end,
                                   expected_peak_per_min=peak, remind_before_minutes=int(remind_n or 0)))
    if errors:
        raise CalendarError(errors)
    return sorted(events, key=lambda e: (e.start, e.brand, e.name))


def _number(value: Any, where: str, problems: list[str], *, positive: bool) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{where}: expected a number, got {value!r}")
        return None
    if value < 0 or (positive and value == 0):
        problems.append(f"{where}: must be {'greater than 0' if positive else '0 or more'}")
        return None
    return float(value)


# -- questions the pipeline asks -------------------------------------------------------------------
def _as_datetime(at: datetime | float) -> datetime:
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError("pass an aware datetime or epoch seconds")
        return at
    return datetime.fromtimestamp(at, timezone.utc)


def active_event(events: Iterable[PlannedEvent], brand: str, at: datetime | float,
                 lead_minutes: float = LEAD_MINUTES) -> PlannedEvent | None:
    """The brand's planned event running at ``at`` (from ``lead_minutes`` before its start to its
    end).  With overlapping events, the one that started last: it is the one people are watching."""
    when = _as_datetime(at)
    matching = [e for e in events if e.brand.casefold() == brand.casefold() and e.covers(when, lead_minutes)]
    return max(matching, key=lambda e: e.start, default=None)


def reminders_due(events: Iterable[PlannedEvent], now: datetime | float, already_sent: set[str]) -> list[Reminder]:
    """Reminders to send now: from ``remind_before_minutes`` before each start until the start.
    A reminder after the start is noise (the event is on, the incident message will say so)."""
    when = _as_datetime(now)
    due = []
    for e in events:
        if e.remind_before_minutes <= 0 or e.reminder_key in already_sent:
            continue
        if e.start - timedelta(minutes=e.remind_before_minutes) <= when < e.start:
            due.append(Reminder(e, e.reminder_key, (e.start - when).total_seconds() / 60))
    return due


def assess(event: PlannedEvent, observed_per_min: float, k: float = BIGGER_FACTOR) -> Assessment:
    """``bigger_than_planned`` when the observed rate is more than ``k`` times the planned peak.
    An event without a planned size cannot be exceeded: its surge is expected."""
    if event.expected_peak_per_min is None:
        return "expected"
    return "bigger_than_planned" if observed_per_min > k * event.expected_peak_per_min else "expected"


def describe(event: PlannedEvent, tz: str | tzinfo = "UTC") -> str:
    """Plain text for a reminder or an incident note (escape it for the channel that shows it)."""
    zone = _zone(tz)
    start, end = event.start.astimezone(zone), event.end.astimezone(zone)
    same_day = start.date() == end.date()
    when = f"{start:%a %d %b %H:%M}–{end:%H:%M}" if same_day else f"{start:%a %d %b %H:%M} – {end:%a %d %b %H:%M}"
    size = f", expected peak ~{event.expected_peak_per_min:g} mentions/min" if event.expected_peak_per_min else ""
    return f"{event.brand}: {event.name}, {when} {start.tzname()}{size}"


def planned_note(events: Iterable[PlannedEvent], brand: str, at: datetime | float, observed_per_min: float, *,
                 lead_minutes: float = LEAD_MINUTES, k: float = BIGGER_FACTOR) -> dict[str, Any] | None:
    """What an incident transition records when it happens during a planned event (None otherwise):
    ``{"name", "start", "end", "expected_peak_per_min", "observed_per_min", "assessment", "page"}``.
    ``page`` is False while the surge is the expected one: the pager stays quiet, Slack says why."""
    ev = active_event(events, brand, at, lead_minutes)
    if ev is None:
        return None
    verdict = assess(ev, observed_per_min, k)
    return {
        "name": ev.name, "start": ev.start.timestamp(), "end": ev.end.timestamp(),
        "expected_peak_per_min": ev.expected_peak_per_min, "observed_per_min": round(observed_per_min, 3),
        "assessment": verdict, "page": verdict == "bigger_than_planned",
    }


# -- the thin I/O wrapper: send due reminders exactly once -----------------------------------------
def send_due_reminders(store: Any, events: Iterable[PlannedEvent], now: float, post: Any,
                       tz: str | tzinfo = "UTC", lease_seconds: float = 120.0) -> list[str]:
    """Send every due reminder once, with the store's claim (the same exactly-once rule as
    notifications: claim, send, mark sent).  ``post(text)`` sends one reminder and raises on
    failure; a failed one is released so the next tick tries again.  Returns the keys sent."""
    events = list(events)
    sent_before = {e.reminder_key for e in events
                   if (store.delivery(e.reminder_key) or {}).get("status") == "sent"}
    done = []
    for r in reminders_due(events, now, sent_before):
        if not store.claim(r.key, lease_seconds, now):
            continue  # another worker has it
        try:
            post(f"Planned in {r.minutes_before:.0f} min: {describe(r.event, tz)}. The surge is expected; "
                 f"SurgeWatch pages only if it is more than {BIGGER_FACTOR:g}x the planned peak.")
        except BaseException:
            store.release(r.key)
            raise
        store.mark_sent(r.key, {"at": now})
        done.append(r.key)
    return done
