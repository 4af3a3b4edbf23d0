"""Charts: valid PNGs of a fixed size, whatever the data (including none), rendered headless."""
from __future__ import annotations

import io
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from surgewatch.reports.charts import Marker, incident_chart, png_size, source_colours, timeline_chart, volume_chart

T0 = 1_795_000_000.0 - 1_795_000_000.0 % 86400  # a midnight UTC in 2026


def pixels(png: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(png), format="png")


def test_the_volume_chart_is_a_1200_by_600_png_that_shows_something():
    png = volume_chart(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], {"rss": [1, 2, 3, 4, 5, 6, 7], "x": [7] * 7},
                       [5] * 7, [4.5] * 7, title="Acme")
    assert png_size(png) == (1200, 600)
    img = pixels(png)
    assert img.shape[:2] == (600, 1200) and img.std() > 0.05


def test_the_incident_chart_draws_traffic_and_markers_and_keeps_its_size():
    counts = {"rss": {T0 + 60 * i: 2 + (i > 100) * (i - 100) for i in range(180)}, "x": {T0 + 60 * i: 1 for i in range(0, 180, 3)}}
    markers = [Marker(T0 + 110 * 60, "WATCH (opened)", "opened"), Marker(T0 + 120 * 60, "ack sam", "ack"),
               Marker(T0 - 86400, "outside the window is ignored", "alert")]
    png = incident_chart(counts, bucket_seconds=60, markers=markers, traffic=[(T0 + 60 * i, 1500 + 10 * i) for i in range(180)],
                         title="Acme <b>", tz="Europe/London", width_px=1000, height_px=400)
    assert png_size(png) == (1000, 400)
    plain = incident_chart(counts, bucket_seconds=60)
    assert png_size(plain) == (1200, 600) and plain != png


@pytest.mark.parametrize("render", [
    lambda: volume_chart(["Mon"] * 7, {}, [0] * 7, None),
    lambda: volume_chart(["Mon"] * 7, {}, None, None),
    lambda: timeline_chart({}, bucket_seconds=60, start=T0, end=T0 + 3600),
    lambda: incident_chart({}),
])
def test_empty_data_still_gives_a_valid_chart(render):
    assert png_size(render()) == (1200, 600)


def test_png_size_rejects_what_is_not_a_png():
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + b"\0" * 30)


def test_a_source_keeps_its_colour_whatever_the_order():
    assert source_colours(["x", "rss"]) == source_colours(["rss", "x"])
    assert len(set(source_colours(["a", "b", "c"]).values())) == 3


def test_rendering_never_touches_pyplot_so_workers_need_no_display():
    code = ("import sys; from surgewatch.reports.charts import incident_chart; incident_chart({'rss': {0: 1}}); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"MPLBACKEND": "TkAgg", "PATH": "/usr/bin:/bin", "PYTHONPATH": "."})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
