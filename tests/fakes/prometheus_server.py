"""A local Prometheus HTTP API (``GET /api/v1/query_range``) for tests and demos.

It answers in Prometheus' documented wire format (https://prometheus.io/docs/prometheus/latest/querying/api/):

* 200 ``{"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {...},
  "values": [[<unix seconds>, "<value as a string>"], ...]}]}}``, one point per ``step`` from ``start`` to
  ``end``, taking the latest sample at most five minutes old (Prometheus' lookback) and leaving gaps out;
* 400 ``{"status": "error", "errorType": "bad_data", "error": "..."}`` for the parameter errors the real
  server reports (unparseable times or step, end before start, more than 11,000 points per series), and for
  queries scripted with :meth:`FakePrometheus.refuse` (e.g. a parse error; 422 ``execution``, 503 ``timeout``);
* 401 ``Unauthorized`` in plain text, as the reverse proxy in front of a Prometheus does, when a bearer token is
  required and missing or wrong.

Failures (5xx, a cut-off body, a huge body) are scripted with ``fail`` / ``fail_malformed`` / ``fail_huge``
from :class:`tests.fakes.x_server.FakeAPIServer`; ``delay`` makes every answer slow (client timeouts).

    with FakePrometheus(bearer_token="s3cret") as prom:
        prom.set_series("sum(rate(http_requests_total[5m])) * 60", [(t0, 900.0), (t0 + 60, 910.0)])
"""
from __future__ import annotations

import bisect
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence

from tests.fakes.x_server import FakeAPIServer, RecordedRequest

MAX_POINTS = 11_000  # Prometheus refuses a range query that would return more points per series
LOOKBACK = 300.0  # a sample stays current for five minutes (Prometheus' default lookback delta)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}


@dataclass
class _Series:
    labels: dict[str, str]
    times: list[float]
    values: list[float]


class FakePrometheus(FakeAPIServer):
    def __init__(self, *, bearer_token: str | None = None, delay: float = 0.0,
                 clock: Callable[[], float] = time.time):
        super().__init__(clock=clock)
        self.bearer_token = bearer_token
        self.delay = delay
        self._series: dict[str, list[_Series]] = {}
        self._refusals: dict[str, tuple[int, str, str]] = {}

    # -- scripting ----------------------------------------------------------------------------------
    def set_series(self, query: str, samples: Sequence[tuple[float, float]], labels: dict[str, str] | None = None,
                   *, add: bool = False) -> None:
        """What ``query`` evaluates to: one series of (time, value) samples (``add=True``: one more series)."""
        pts = sorted((float(t), float(v)) for t, v in samples)
        series = _Series(dict(labels or {}), [t for t, _ in pts], [v for _, v in pts])
        if add:
            self._series.setdefault(query, []).append(series)
        else:
            self._series[query] = [series]

    def refuse(self, query: str, error: str, *, error_type: str = "bad_data", status: int = 400) -> None:
        """``query`` gets Prometheus' error envelope: e.g. a parse error (400 bad_data), an execution error
        (422 execution) or a query timeout (503 timeout)."""
        self._refusals[query] = (status, error_type, error)

    @property
    def query_requests(self) -> list[RecordedRequest]:
        return self.requests_to("/api/v1/query_range")

    # -- the API ------------------------------------------------------------------------------------
    def route(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        if self.delay:
            time.sleep(self.delay)
        if self.bearer_token is not None and request.headers.get("authorization") != f"Bearer {self.bearer_token}":
            return 401, {"Content-Type": "text/plain; charset=utf-8", "WWW-Authenticate": "Bearer"}, b"Unauthorized\n"
        if request.path != "/api/v1/query_range":
            return 404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found\n"
        q = request.query
        query = q.get("query", "")
        if not query.strip():
            return _error(400, "bad_data", 'invalid parameter "query": 1:1: parse error: no expression found in input')
        try:
            start = _timestamp(q.get("start", ""), "start")
            end = _timestamp(q.get("end", ""), "end")
            step = _duration(q.get("step", ""), "step")
        except ValueError as exc:
            return _error(400, "bad_data", str(exc))
        if end < start:
            return _error(400, "bad_data", "end timestamp must not be before start time")
        if step <= 0:
            return _error(400, "bad_data",
                          "zero or negative query resolution step widths are not accepted. Try a positive integer")
        if (end - start) / step > MAX_POINTS:
            return _error(400, "bad_data", "exceeded maximum resolution of 11,000 points per timeseries. "
                                           "Try decreasing the query resolution (?step=XX)")
        if query in self._refusals:
            status, kind, message = self._refusals[query]
            return _error(status, kind, message)
        result = []
        for series in self._series.get(query, []):
            values = []
            n = int(math.floor((end - start) / step + 1e-9)) + 1
            for i in range(n):
                at = start + i * step
                j = bisect.bisect_right(series.times, at) - 1
                if j >= 0 and at - series.times[j] <= LOOKBACK:
                    values.append([_number(at), _format(series.values[j])])
            if values:
                result.append({"metric": series.labels, "values": values})
        return 200, {}, {"status": "success", "data": {"resultType": "matrix", "result": result}}


def _error(status: int, kind: str, message: str) -> tuple[int, dict[str, str], Any]:
    return status, {}, {"status": "error", "errorType": kind, "error": message}


def _timestamp(text: str, name: str) -> float:
    """Unix seconds (with a fraction) or RFC 3339, as Prometheus accepts them."""
    try:
        value = float(text)
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp') from None


def _duration(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f'invalid parameter "{name}": cannot parse "{text}" to a valid duration')
    return float(m.group(1)) * _UNIT[m.group(2)]


def _number(t: float) -> float | int:
    return int(t) if float(t).is_integer() else round(t, 3)


def _format(v: float) -> str:
    """Sample values are strings in the API (Go's strconv.FormatFloat(v, 'f', -1, 64)), NaN and +Inf included."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text
