"""The console channel: one readable, single line per notification."""
from __future__ import annotations

import io

import pytest

from surgewatch.notifier import ChannelError, ConsoleChannel
from tests.test_notifier_contract import AT, make_mention, make_notification


def test_it_prints_one_readable_line_with_rate_ratio_and_forecast() -> None:
    out = io.StringIO()
    ConsoleChannel(out).send(make_notification(top_mentions=()))
    assert out.getvalue() == (
        "2026-11-28T10:05:00Z WARNING Acme opened: 48 mentions/min vs 3.1 expected (x15.5); peak ~120/min in ~20 min\n"
    )


def test_rates_are_per_minute_whatever_the_bucket() -> None:
    line = ConsoleChannel().format(make_notification(bucket_seconds=300, observed=240, expected=15, top_mentions=(),
                                                     forecast_peak_rate=None))
    assert line.endswith("Acme opened: 48 mentions/min vs 3 expected (x16.0)")


def test_escalation_and_resolution_say_what_changed() -> None:
    ch = ConsoleChannel()
    assert "Acme escalated warning → critical:" in ch.format(make_notification(event="escalated", severity="critical", previous_severity="warning"))
    resolved = ch.format(make_notification(event="resolved", observed=3))
    assert "Acme resolved: 3 mentions/min" in resolved and "peak" not in resolved


def test_a_post_cannot_forge_a_second_log_line() -> None:
    out = io.StringIO()
    evil = make_mention(1, text="ok\n2026-11-28T10:06:00Z CRITICAL Acme opened: fake\x1b[2J")
    ConsoleChannel(out).send(make_notification(top_mentions=(evil,)))
    assert out.getvalue().count("\n") == 1
    assert "\x1b" not in out.getvalue()


def test_no_baseline_yet_is_said_instead_of_dividing_by_zero() -> None:
    assert "(x∞ (no baseline yet))" in ConsoleChannel().format(make_notification(expected=0, top_mentions=()))


def test_it_writes_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleChannel().send(make_notification(top_mentions=()))
    assert capsys.readouterr().out.startswith("2026-11-28T10:05:00Z WARNING Acme opened")


def test_a_closed_stream_is_a_permanent_error() -> None:
    stream = io.StringIO()
    stream.close()
    with pytest.raises(ChannelError) as info:
        ConsoleChannel(stream).send(make_notification())
    assert info.value.permanent


def test_the_line_ends_with_the_expected_site_traffic() -> None:
    from surgewatch.notifier.base import TrafficOutlook

    outlook = TrafficOutlook(normal_rpm=903.0, multiple=6.04, peak_rpm=5454.0, seconds_to_peak=1416.0,
                             basis="from 3 past surges, R² 0.91, typical error ±12%")
    out = io.StringIO()
    ConsoleChannel(out).send(make_notification(top_mentions=(), traffic_outlook=outlook))
    assert out.getvalue() == (
        "2026-11-28T10:05:00Z WARNING Acme opened: 48 mentions/min vs 3.1 expected (x15.5); peak ~120/min in ~20 min; "
        "site traffic about 6x normal (~5,500 req/min vs ~900) in ~25 min\n"
    )


@pytest.mark.parametrize("tz, shown", [
    ("Europe/London", "2026-11-28T10:05:00+00:00"),  # GMT in November: the offset still says it is local
    ("America/New_York", "2026-11-28T05:05:00-05:00"),
    ("Australia/Sydney", "2026-11-28T21:05:00+11:00"),
])
def test_the_line_gives_the_time_in_the_notifications_zone_with_its_offset(tz: str, shown: str) -> None:
    from surgewatch import clock

    n = make_notification(top_mentions=(), at=clock.local(AT, tz))
    assert ConsoleChannel().format(n).startswith(f"{shown} WARNING Acme opened: ")

