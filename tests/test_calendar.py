"""Planned events: loading (offsets, local times, the Europe/London change on 2026-10-25), the
active window, reminders and the "bigger than planned" assessment."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch.incidents.calendar import (
    CalendarError,
    PlannedEvent,
    active_event,
    assess,
    describe,
    load_calendar,
    localize,
    planned_note,
    reminders_due,
    send_due_reminders,
)

LONDON = ZoneInfo("Europe/London")
UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def event(name: str = "ticket launch", start: datetime = utc(2026, 10, 23, 8), minutes: int = 60, **kw) -> PlannedEvent:
    return PlannedEvent(brand=kw.pop("brand", "Acme"), name=name, start=start, end=start + timedelta(minutes=minutes), **kw)


# ---- loading -------------------------------------------------------------------------------------

def test_nine_on_friday_stays_nine_local_on_both_sides_of_the_clock_change() -> None:
    before, after = load_calendar([
        {"brand": "Acme", "name": "launch, week 1", "start": "2026-10-23T09:00", "duration_minutes": 60},
        {"brand": "Acme", "name": "launch, week 2", "start": "2026-10-30 09:00", "duration_minutes": 60},
    ], "Europe/London")
    assert before.start == utc(2026, 10, 23, 8)  # BST, UTC+1
    assert after.start == utc(2026, 10, 30, 9)  # GMT, UTC+0
    assert before.start.astimezone(LONDON).hour == after.start.astimezone(LONDON).hour == 9


def test_an_explicit_offset_wins_over_the_configured_zone() -> None:
    [ev] = load_calendar([{"brand": "Acme", "name": "TV ad", "start": "2026-10-23T09:00:00+02:00",
                           "end": "2026-10-23T07:30:00Z", "expected_peak_per_min": 400}], "Europe/London")
    assert ev.start == utc(2026, 10, 23, 7) and ev.end == utc(2026, 10, 23, 7, 30)
    assert ev.expected_peak_per_min == 400 and ev.remind_before_minutes == 60


def test_the_hour_that_happens_twice_needs_an_offset_and_either_offset_works() -> None:
    with pytest.raises(CalendarError) as info:
        load_calendar([{"brand": "Acme", "name": "late TV slot", "start": "2026-10-25T01:30", "duration_minutes": 15}], "Europe/London")
    [line] = info.value.errors
    assert line.startswith("calendar[0].start: 2026-10-25 01:30 happens twice in Europe/London")
    assert "2026-10-25T01:30+01:00" in line and "2026-10-25T01:30+00:00" in line
    first, second = load_calendar([
        {"brand": "Acme", "name": "first 01:30", "start": "2026-10-25T01:30+01:00", "duration_minutes": 15},
        {"brand": "Acme", "name": "second 01:30", "start": "2026-10-25T01:30+00:00", "duration_minutes": 15},
    ], "Europe/London")
    assert second.start - first.start == timedelta(hours=1)


def test_a_local_time_the_clocks_skip_is_refused() -> None:
    with pytest.raises(CalendarError, match="2026-03-29 01:30 does not exist in Europe/London"):
        load_calendar([{"brand": "Acme", "name": "x", "start": "2026-03-29T01:30", "duration_minutes": 5}], "Europe/London")


def test_durations_are_elapsed_time_and_local_ends_follow_the_zone_across_the_change() -> None:
    by_duration, by_end = load_calendar([
        {"brand": "Acme", "name": "overnight sale", "start": "2026-10-25T00:30", "duration_minutes": 120},
        {"brand": "Acme", "name": "overnight sale, until 03:00", "start": "2026-10-25T00:30", "end": "2026-10-25T03:00"},
    ], "Europe/London")
    assert by_duration.start == utc(2026, 10, 24, 23, 30)  # 00:30 BST
    assert by_duration.end == utc(2026, 10, 25, 1, 30)  # two real hours later: 01:30 GMT on the wall
    assert by_duration.end.astimezone(LONDON).strftime("%H:%M %Z") == "01:30 GMT"
    assert by_end.end - by_end.start == timedelta(hours=3, minutes=30)  # the wall clock shows 2h30 but 3h30 pass


def test_timestamps_yaml_already_parsed_are_accepted() -> None:
    entries = yaml.safe_load("""
- {brand: Acme, name: naive, start: 2026-10-23 09:00:00, duration_minutes: 30}
- {brand: Acme, name: offset, start: 2026-10-23T09:00:00+02:00, end: 2026-10-23T10:00:00+02:00}
""")
    naive, offset = sorted(load_calendar(entries, "Europe/London"), key=lambda e: e.name)
    assert naive.start == utc(2026, 10, 23, 8)
    assert offset.start == utc(2026, 10, 23, 7) and offset.end == utc(2026, 10, 23, 8)


def test_every_problem_is_reported_at_once_with_its_entry_and_key() -> None:
    with pytest.raises(CalendarError) as info:
        load_calendar([
            {"brand": "Acme", "name": "ok", "start": "2026-10-23T09:00", "duration_minutes": 10},
            {"brand": "Acme", "start": "next friday", "duration_minutes": 10},
            {"brand": "Acme", "name": "backwards", "start": "2026-10-23T09:00", "end": "2026-10-23T08:00"},
            {"brand": "Acme", "name": "both", "start": "2026-10-23T09:00", "end": "2026-10-23T10:00", "duration_minutes": 5},
            {"brand": "Acme", "name": "sizes", "start": "2026-10-23T09:00", "duration_minutes": 10,
             "expected_peak_per_min": -1, "remind_before_minutes": "soon", "colour": "red"},
            "not a mapping",
        ], "Europe/London")
    errors = info.value.errors
    assert "calendar[1].name: field required" in errors
    assert any(e.startswith("calendar[1].start: cannot read 'next friday'") for e in errors)
    assert "calendar[2].end: must be after the start" in errors
    assert "calendar[3]: give end or duration_minutes, not both" in errors
    assert "calendar[4].expected_peak_per_min: must be greater than 0" in errors
    assert "calendar[4].remind_before_minutes: expected a number, got 'soon'" in errors
    assert "calendar[4].colour: unknown key" in errors
    assert "calendar[5]: expected a mapping with brand, name, start and end" in errors
    assert not any(e.startswith("calendar[0]") for e in errors)


def test_an_unknown_zone_is_a_calendar_error() -> None:
    with pytest.raises(CalendarError, match="unknown time zone 'Europe/Londres'"):
        load_calendar([], "Europe/Londres")


def test_events_need_aware_times_that_end_after_they_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PlannedEvent("Acme", "x", datetime(2026, 10, 23, 9), datetime(2026, 10, 23, 10))
    with pytest.raises(ValueError, match="ends before it starts"):
        event(minutes=0)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31)))
def test_a_local_time_that_exists_once_reads_back_as_the_same_wall_clock_time(naive: datetime) -> None:
    naive = naive.replace(microsecond=0)
    try:
        instant = localize(naive, LONDON)
    except ValueError as exc:  # only the skipped and the repeated hour may be refused
        assert (naive.month, naive.day, naive.hour) in ((3, 29, 1), (10, 25, 1)), exc
        return
    assert instant.astimezone(LONDON).replace(tzinfo=None) == naive


# ---- the active window ---------------------------------------------------------------------------

def test_an_event_is_active_from_half_an_hour_before_its_start_to_its_end() -> None:
    launch = event(start=utc(2026, 10, 23, 8), minutes=60)
    events = [launch]
    assert active_event(events, "Acme", utc(2026, 10, 23, 7, 29, 59)) is None
    assert active_event(events, "Acme", utc(2026, 10, 23, 7, 30)) is launch
    assert active_event(events, "acme", utc(2026, 10, 23, 8, 30).timestamp()) is launch  # epoch seconds, any case
    assert active_event(events, "Acme", utc(2026, 10, 23, 9)) is launch
    assert active_event(events, "Acme", utc(2026, 10, 23, 9, 0, 1)) is None
    assert active_event(events, "Globex", utc(2026, 10, 23, 8, 30)) is None
    assert active_event(events, "Acme", utc(2026, 10, 23, 7, 15), lead_minutes=45) is launch


def test_with_overlapping_events_the_latest_started_is_the_active_one() -> None:
    day = event("all-day sale", start=utc(2026, 10, 23, 0), minutes=24 * 60)
    ad = event("TV ad", start=utc(2026, 10, 23, 20), minutes=5, expected_peak_per_min=300)
    assert active_event([ad, day], "Acme", utc(2026, 10, 23, 20, 2)) is ad
    assert active_event([ad, day], "Acme", utc(2026, 10, 23, 21)) is day


# ---- reminders -----------------------------------------------------------------------------------

def test_a_reminder_is_due_from_its_lead_time_until_the_start_and_only_once() -> None:
    launch = event(start=utc(2026, 10, 23, 8), remind_before_minutes=60)
    assert reminders_due([launch], utc(2026, 10, 23, 6, 59), set()) == []
    [due] = reminders_due([launch], utc(2026, 10, 23, 7, 15), set())
    assert due.event is launch and due.key == launch.reminder_key == "calendar:reminder:Acme:ticket launch:20261023T080000Z"
    assert due.minutes_before == 45
    assert reminders_due([launch], utc(2026, 10, 23, 7, 30), {due.key}) == []
    assert reminders_due([launch], utc(2026, 10, 23, 8), set()) == []  # started: too late to remind
    assert reminders_due([event(remind_before_minutes=0)], utc(2026, 10, 23, 7, 59), set()) == []


def test_an_hour_before_means_sixty_real_minutes_on_the_night_the_clocks_go_back() -> None:
    [slot] = load_calendar([{"brand": "Acme", "name": "02:00 slot", "start": "2026-10-25T02:00", "duration_minutes": 10}],
                           "Europe/London")
    assert slot.start == utc(2026, 10, 25, 2)  # 02:00 GMT
    # 01:00 on the wall happens twice; the first (00:00 UTC) is two real hours before the slot.
    assert reminders_due([slot], utc(2026, 10, 25, 0, 30), set()) == []
    [due] = reminders_due([slot], utc(2026, 10, 25, 1), set())
    assert due.minutes_before == 60


# ---- assessment ----------------------------------------------------------------------------------

def test_a_surge_is_bigger_than_planned_only_beyond_k_times_the_planned_peak() -> None:
    ad = event("TV ad", expected_peak_per_min=100)
    assert assess(ad, 150) == "expected"
    assert assess(ad, 200) == "expected"  # exactly 2x is still what we planned for
    assert assess(ad, 200.5) == "bigger_than_planned"
    assert assess(ad, 160, k=1.5) == "bigger_than_planned"
    assert assess(event("unsized launch"), 10_000) == "expected"


def test_describe_shows_local_time_with_the_zone_in_force_that_day() -> None:
    bst = event("ticket launch", start=utc(2026, 10, 23, 8), expected_peak_per_min=250)
    gmt = event("ticket launch", start=utc(2026, 10, 30, 9))
    assert describe(bst, "Europe/London") == "Acme: ticket launch, Fri 23 Oct 09:00–10:00 BST, expected peak ~250 mentions/min"
    assert describe(gmt, "Europe/London") == "Acme: ticket launch, Fri 30 Oct 09:00–10:00 GMT"


# ---- what the pipeline records, and reminders sent once ------------------------------------------

def test_the_planned_note_says_whether_to_page() -> None:
    ad = event("TV ad", start=utc(2026, 10, 23, 20), minutes=5, expected_peak_per_min=300)
    quiet = planned_note([ad], "Acme", utc(2026, 10, 23, 20, 1).timestamp(), 450)
    assert quiet == {"name": "TV ad", "start": ad.start.timestamp(), "end": ad.end.timestamp(),
                     "expected_peak_per_min": 300, "observed_per_min": 450, "assessment": "expected", "page": False}
    loud = planned_note([ad], "Acme", utc(2026, 10, 23, 20, 1), 900)
    assert loud is not None and loud["assessment"] == "bigger_than_planned" and loud["page"] is True
    assert planned_note([ad], "Acme", utc(2026, 10, 23, 21), 900) is None


def test_due_reminders_are_sent_once_even_by_two_workers(tmp_path) -> None:
    from surgewatch.store.sqlite import SqliteStore

    launch = event(start=utc(2026, 10, 23, 8), expected_peak_per_min=250)
    a, b = SqliteStore(str(tmp_path / "s.db")), SqliteStore(str(tmp_path / "s.db"))
    posted: list[str] = []
    now = utc(2026, 10, 23, 7, 15).timestamp()
    assert send_due_reminders(a, [launch], now, posted.append, "Europe/London") == [launch.reminder_key]
    assert send_due_reminders(b, [launch], now + 60, posted.append, "Europe/London") == []
    assert posted == ["Planned in 45 min: Acme: ticket launch, Fri 23 Oct 09:00–10:00 BST, expected peak ~250 "
                      "mentions/min. The surge is expected; SurgeWatch pages only if it is more than 2x the planned peak."]


def test_a_reminder_that_failed_to_send_is_tried_again(tmp_path) -> None:
    from surgewatch.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "s.db"))
    launch = event(start=utc(2026, 10, 23, 8))
    now = utc(2026, 10, 23, 7, 15).timestamp()

    def broken(text: str) -> None:
        raise ConnectionError("slack is down")

    with pytest.raises(ConnectionError):
        send_due_reminders(store, [launch], now, broken)
    posted: list[str] = []
    assert send_due_reminders(store, [launch], now + 60, posted.append) == [launch.reminder_key]
    assert len(posted) == 1
