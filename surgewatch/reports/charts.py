"""Charts for the weekly digest, the post-event review and the Slack incident message.

Pictures first: marketing reads the digest's chart before any table, and the review starts from the
incident's timeline.  Every function returns PNG bytes of a fixed pixel size, so a Slack preview, an
HTML page and the README all lay out the same way.

Headless by construction: figures are built from :class:`matplotlib.figure.Figure` with the Agg
canvas directly, never through ``pyplot``.  pyplot keeps a global registry of open figures and picks
a GUI backend from the environment; a Celery worker rendering a chart for every incident must do
neither (no leaked figures, no display needed).
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence
from zoneinfo import ZoneInfo

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, DateFormatter
from matplotlib.figure import Figure

WIDTH_PX = 1200
HEIGHT_PX = 600
DPI = 100

# One colour per source, stable across charts (a source keeps its colour from digest to review).
_PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
            "#64b5cd"]
_MARKER_STYLE = {
    # kind: (colour, line style)
    "opened": ("#e6a700", "-"),
    "escalated": ("#c44e52", "-"),
    "resolved": ("#55a868", "-"),
    "alert": ("#8172b3", "--"),
    "ack": ("#4c72b0", ":"),
    "traffic_peak": ("#333333", "-."),
    "predicted_peak": ("#999999", ":"),  # where an alert said site traffic would peak (review)
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, slots=True)
class Marker:
    """A vertical line on a timeline: a transition, an alert going out, an acknowledgement."""

    at: float  # epoch seconds
    label: str
    kind: str = "alert"  # a key of _MARKER_STYLE


def source_colours(sources: Sequence[str]) -> dict[str, str]:
    # Sorted, so the same set of sources always gets the same colours whatever order they arrive in.
    return {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(sorted(sources))}


def _figure(width_px: int, height_px: int) -> Figure:
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No bbox_inches="tight": it would crop the canvas and the size would depend on the labels.
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError if ``data`` is not a PNG."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def volume_chart(
    day_labels: Sequence[str],
    this_week: Mapping[str, Sequence[int]],
    previous_week: Sequence[int] | None,
    typical: Sequence[float] | None,
    *,
    title: str = "",
    notes: Sequence[tuple[int, str]] = (),
    width_px: int = WIDTH_PX,
    height_px: int = HEIGHT_PX,
) -> bytes:
    """Mentions per day: this week's bars stacked by source, last week and the typical level as lines.

    ``this_week`` maps a source to one count per day (same length as ``day_labels``); ``typical`` is
    the per-day average of the four weeks before; either is None when there is no such history.
    ``notes`` puts a short label above a day's bar (the digest marks the days with spikes)."""
    fig = _figure(width_px, height_px)
    ax = fig.add_subplot(1, 1, 1)
    x = list(range(len(day_labels)))
    colours = source_colours(list(this_week))
    bottom = [0.0] * len(x)
    for source in sorted(this_week):
        values = [float(v) for v in this_week[source]]
        ax.bar(x, values, bottom=bottom, color=colours[source], width=0.7, label=f"{source} (this week)")
        bottom = [b + v for b, v in zip(bottom, values)]
    if previous_week is not None:
        ax.plot(x, [float(v) for v in previous_week], color="#222222", marker="o", linewidth=2, label="previous week")
    if typical is not None:
        ax.plot(x, [float(v) for v in typical], color="#888888", linestyle="--", linewidth=2,
                label="typical (4-week average)")
    if not this_week and not any(previous_week or ()):
        ax.text(0.5, 0.5, "no mentions collected", transform=ax.transAxes, ha="center", va="center",
                fontsize=16, color="#888888")
    for day, text in notes:
        if 0 <= day < len(x):
            ax.annotate(text, xy=(day, bottom[day]), xytext=(0, 6), textcoords="offset points", ha="center",
                        va="bottom", fontsize=9, color="#c44e52", fontweight="bold")
    ax.set_xticks(x, list(day_labels))
    ax.set_ylabel("mentions per day")
    ax.set_ylim(0, max([*bottom, *(previous_week or ()), *(typical or ()), 1.0]) * 1.15)  # room for the notes
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, loc="left", fontsize=14)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=9, frameon=False, ncol=2)
    fig.tight_layout()
    return _png(fig)


def timeline_chart(
    counts: Mapping[str, Mapping[float, int]],
    *,
    bucket_seconds: int,
    start: float,
    end: float,
    markers: Sequence[Marker] = (),
    traffic: Sequence[tuple[float, float]] | None = None,
    title: str = "",
    tz: str = "UTC",
    width_px: int = WIDTH_PX,
    height_px: int = HEIGHT_PX,
) -> bytes:
    """Mentions per bucket per source (stacked areas) from ``start`` to ``end``, site traffic on a
    second axis when known, and a vertical line for every marker."""
    zone = ZoneInfo(tz)
    fig = _figure(width_px, height_px)
    ax = fig.add_subplot(1, 1, 1)
    first = int(start // bucket_seconds) * bucket_seconds
    times = list(range(first, int(end), bucket_seconds))
    xs = [datetime.fromtimestamp(t, timezone.utc) for t in times]
    sources = sorted(counts)
    colours = source_colours(sources)
    if sources and xs:
        ys = [[float(counts[s].get(t, counts[s].get(float(t), 0))) for t in times] for s in sources]
        ax.stackplot(xs, ys, labels=sources, colors=[colours[s] for s in sources], alpha=0.85, step="post")
    else:
        ax.text(0.5, 0.5, "no mentions in this window", transform=ax.transAxes, ha="center", va="center",
                fontsize=16, color="#888888")
    minutes = bucket_seconds / 60
    ax.set_ylabel(f"mentions per {minutes:g} min" if minutes != 1 else "mentions per minute")
    ax.set_ylim(bottom=0)
    if xs:
        ax.set_xlim(xs[0], datetime.fromtimestamp(end, timezone.utc))
    handles, labels = ax.get_legend_handles_labels()
    if traffic:
        ax2 = ax.twinx()
        shown = [(t, r) for t, r in traffic if start <= t <= end]
        ax2.plot([datetime.fromtimestamp(t, timezone.utc) for t, _ in shown], [r for _, r in shown],
                 color="#222222", linewidth=1.5, label="site traffic (requests/min)")
        ax2.set_ylabel("site requests per minute")
        ax2.set_ylim(bottom=0)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    # Markers: a line each in the plot, their labels in a lane above it (never over the data), each
    # label in the lowest row where it overprints no other.
    shown_markers = [m for m in sorted(markers, key=lambda m: m.at) if start <= m.at <= end]
    for m in shown_markers:
        colour, style = _MARKER_STYLE.get(m.kind, ("#555555", "--"))
        ax.axvline(datetime.fromtimestamp(m.at, timezone.utc), color=colour, linestyle=style, linewidth=1.4)
    rows = _label_lane(fig, ax, shown_markers)
    locator = AutoDateLocator(tz=zone)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(DateFormatter("%a %H:%M", tz=zone))
    ax.set_xlabel(f"time ({tz})")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, loc="left", fontsize=14, pad=6 + _LANE_ROW_POINTS * rows)
    if handles:
        ax.legend(handles, labels, loc="upper left", fontsize=9, frameon=False)
    fig.tight_layout()
    return _png(fig)


_LANE_ROW_POINTS = 13  # one row of marker labels above the plot


def _label_lane(fig: Figure, ax: object, markers: Sequence[Marker]) -> int:
    """Write each marker's label above the plot, starting at its line, in the lowest row where it
    overlaps no label already placed (measured with the renderer, not guessed).  Returns the rows used."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    ends: list[float] = []  # per row: the right edge (display px) of its last label
    for m in markers:
        colour, _ = _MARKER_STYLE.get(m.kind, ("#555555", "--"))
        text = ax.annotate(m.label, xy=(datetime.fromtimestamp(m.at, timezone.utc), 1.0),  # type: ignore[attr-defined]
                           xycoords=("data", "axes fraction"), xytext=(2, 3), textcoords="offset points",
                           fontsize=8, color=colour, ha="left", va="bottom", annotation_clip=False)
        box = text.get_window_extent(renderer)
        row = next((i for i, right in enumerate(ends) if box.x0 > right + 4), len(ends))
        if row == len(ends):
            ends.append(0.0)
        ends[row] = box.x1
        text.set_position((2, 3 + _LANE_ROW_POINTS * row))
    return len(ends)


def incident_chart(
    counts: Mapping[str, Mapping[float, int]],
    *,
    bucket_seconds: int = 60,
    start: float | None = None,
    end: float | None = None,
    markers: Sequence[Marker] = (),
    traffic: Sequence[tuple[float, float]] | None = None,
    title: str = "",
    tz: str = "UTC",
    width_px: int = WIDTH_PX,
    height_px: int = HEIGHT_PX,
) -> bytes:
    """The chart for an incident message (Slack) or a review: ``counts`` as ``store.counts`` returns
    them; the window defaults to the span of the counts and markers."""
    times = [float(t) for series in counts.values() for t in series] + [m.at for m in markers]
    if start is None:
        start = min(times) if times else 0.0
    if end is None:
        end = (max(times) + bucket_seconds) if times else start + bucket_seconds
    return timeline_chart(counts, bucket_seconds=bucket_seconds, start=start, end=end, markers=markers,
                          traffic=traffic, title=title, tz=tz, width_px=width_px, height_px=height_px)


def band_chart(
    rows: Sequence[tuple[float, float, float, float]],
    *,
    bucket_seconds: int,
    title: str = "",
    tz: str = "UTC",
    step_seconds: int = 300,
    width_px: int = 900,
    height_px: int = 260,
) -> bytes:
    """The dashboard's chart: mentions per minute against the band the detector expected.  ``rows``:
    (bucket start, observed count, band low, band high) per bucket, averaged over ``step_seconds`` so
    a day stays readable (minutes of a few mentions are noise)."""
    zone = ZoneInfo(tz)
    fig = _figure(width_px, height_px)
    ax = fig.add_subplot(1, 1, 1)
    per_min = 60.0 / bucket_seconds
    step = max(step_seconds, bucket_seconds)
    grouped: dict[int, list[tuple[float, float, float]]] = {}
    for t, observed, low, high in rows:
        grouped.setdefault(int(t // step * step), []).append((observed, low, high))
    xs = [datetime.fromtimestamp(t, timezone.utc) for t in sorted(grouped)]
    mean = [[sum(v[i] for v in grouped[t]) / len(grouped[t]) * per_min for t in sorted(grouped)] for i in range(3)]
    if xs:
        ax.fill_between(xs, mean[1], mean[2], step="post", color="#4c72b0", alpha=0.3, linewidth=0,
                        label="expected (99% band)")
        ax.step(xs, mean[0], where="post", color="#c44e52", linewidth=1.4, label="mentions per minute")
        ax.set_xlim(xs[0], xs[-1])
        ax.legend(loc="upper left", fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no mentions in the last 24 hours", transform=ax.transAxes, ha="center", va="center",
                fontsize=12, color="#888888")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("mentions/min")
    ax.xaxis.set_major_locator(AutoDateLocator(tz=zone))
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=zone))
    ax.grid(axis="y", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, loc="left", fontsize=11)
    fig.tight_layout()
    return _png(fig)

