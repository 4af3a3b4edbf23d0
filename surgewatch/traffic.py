"""Expected site traffic for an alert: the I/O around :mod:`detector.traffic`.

``traffic_outlook(rt, brand, verdict, at)`` is what ``build_notification`` calls.  For a brand with a
``traffic:`` setting it

1. loads the site's requests per minute over the last ``HISTORY_DAYS`` (what the store keeps of mentions)
   from a CSV file or from Prometheus' ``/api/v1/query_range``, and the brand's mention counts from the store;
2. fits the model and caches it in the store's small JSON state (``traffic-model:<brand>``), refitted once it
   is a day old or when the setting changes;
3. turns the verdict's forecast (peak mention rate, time to peak) into "about 6x normal (~5,400 req/min vs ~900)
   in ~25 min".

Everything read from outside is untrusted: a malformed file or a Prometheus answering 4xx/5xx, slowly, with
bad JSON or too much of it is a :class:`TrafficHistoryError` naming what is wrong (never the bearer token).
None of it may stop an alert: the outlook is then None and a warning is logged.  A failure is remembered for
``RETRY_FAILED_AFTER`` so a Prometheus that is down does not slow every notification down with its timeouts;
meanwhile the last good model (up to ``STALE_MODEL_LIMIT`` old) is used.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Protocol
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import requests

from surgewatch.collectors.http import BodyError, read_capped, redact_url
from surgewatch.detector.traffic import TrafficModel, TrafficModelError, fit_traffic_model, predict_traffic
from surgewatch.detector.verdict import Severity, Verdict
from surgewatch.notifier.base import TrafficOutlook
from surgewatch.notifier.escape import log_text
from surgewatch.config import BrandConfig, PrometheusTrafficConfig, Settings, TrafficHistoryConfig
from surgewatch.store.base import Store



class Runtime(Protocol):
    """What the outlook needs of the pipeline's runtime (a protocol, so this module does not import
    the pipeline that calls it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...


log = logging.getLogger("surgewatch.traffic")

STATE_PREFIX = "traffic-model:"
STATE_VERSION = 1
HISTORY_DAYS = 35.0  # the store keeps about this much mention history
REFIT_AFTER = 86400.0
RETRY_FAILED_AFTER = 15 * 60.0
STALE_MODEL_LIMIT = 7 * 86400.0
CSV_MAX_BYTES = 50_000_000  # read whole: a year of minutes is ~15 MB
# Prometheus refuses more than 11,000 points per series in one query_range: ask for fewer, in chunks.
PROMETHEUS_POINTS_PER_REQUEST = 10_000
PROMETHEUS_TIMEOUT = 10.0  # connect and per-read
PROMETHEUS_DEADLINE = 30.0  # all chunks together: the notify task's soft limit is 60 s
PROMETHEUS_MAX_BYTES = 20_000_000  # 10,000 points are ~300 KB of JSON
EARLIEST_PLAUSIBLE = 946_684_800.0  # 2000-01-01: an earlier "epoch seconds" value is a unit mistake
LATEST_PLAUSIBLE = 4_102_444_800.0  # 2100-01-01: a later one is milliseconds


class TrafficHistoryError(Exception):
    """The site's traffic history cannot be read.  ``str()`` is one line naming the source and the problem."""


# -- CSV ------------------------------------------------------------------------------------------
def load_csv_history(path: str | os.PathLike[str], start: float, end: float) -> list[tuple[float, float]]:
    """``timestamp,requests_per_minute`` rows in ``[start, end)``; the timestamp is epoch seconds or ISO 8601
    (a naive one is UTC); one header row, blank lines and ``#`` comments are allowed."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise TrafficHistoryError(f"traffic CSV {p}: file not found") from None
    except OSError as exc:
        raise TrafficHistoryError(f"traffic CSV {p}: cannot read ({exc.strerror or exc.__class__.__name__})") from None
    if size > CSV_MAX_BYTES:
        raise TrafficHistoryError(f"traffic CSV {p}: {size} bytes is more than the {CSV_MAX_BYTES}-byte limit")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise TrafficHistoryError(f"traffic CSV {p}: cannot read ({exc.strerror or exc.__class__.__name__})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise TrafficHistoryError(f"traffic CSV {p}:{line}: not UTF-8 text (byte {exc.start})") from None
    out: list[tuple[float, float]] = []
    data_rows = 0
    first = True
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for row in reader:
            n = reader.line_num
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) != 2:
                raise TrafficHistoryError(f"traffic CSV {p}:{n}: expected 2 columns (timestamp,requests_per_minute), "
                                          f"got {len(row)}")
            stamp, value = row[0].strip(), row[1].strip()
            header, first = first and _is_header(stamp, value), False
            if header:
                continue
            try:
                rpm = float(value)
            except ValueError:
                raise TrafficHistoryError(f"traffic CSV {p}:{n}: {value[:40]!r} is not a number of "
                                          "requests per minute") from None
            if not math.isfinite(rpm) or rpm < 0:
                raise TrafficHistoryError(f"traffic CSV {p}:{n}: requests per minute must be a finite number >= 0, "
                                          f"got {value[:40]!r}")
            t = _parse_time(stamp, f"traffic CSV {p}:{n}")
            data_rows += 1
            if start <= t < end:
                out.append((t, rpm))
    except csv.Error as exc:
        raise TrafficHistoryError(f"traffic CSV {p}:{reader.line_num}: {exc}") from None
    if data_rows == 0:
        raise TrafficHistoryError(f"traffic CSV {p}: no data rows (expected timestamp,requests_per_minute)")
    out.sort()
    return out


def _is_header(stamp: str, value: str) -> bool:
    """A first row whose two cells are neither a time nor a number: column names."""
    try:
        float(value)
        return False
    except ValueError:
        pass
    try:
        float(stamp)
        return False
    except ValueError:
        pass
    try:
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        return False
    except ValueError:
        return True


# Cells are shown with repr(): it escapes control and bidi characters, so a cell cannot forge a log line.
def _parse_time(stamp: str, where: str) -> float:
    try:
        t = float(stamp)
    except ValueError:
        try:
            dt = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            raise TrafficHistoryError(f"{where}: {stamp[:40]!r} is neither epoch seconds nor an ISO 8601 "
                                      "time") from None
        t = (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(t) or t < EARLIEST_PLAUSIBLE:
        raise TrafficHistoryError(f"{where}: timestamp {stamp[:40]!r} is before 2000 (epoch seconds expected)")
    if t > LATEST_PLAUSIBLE:
        raise TrafficHistoryError(f"{where}: timestamp {stamp[:40]!r} is after 2100: milliseconds? "
                                  "(epoch seconds expected)")
    return t


# -- Prometheus -----------------------------------------------------------------------------------
def query_range_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith("/api/v1/query_range") else base + "/api/v1/query_range"


def load_prometheus_history(
    cfg: PrometheusTrafficConfig,
    start: float,
    end: float,
    *,
    session: requests.Session | None = None,
    timeout: float = PROMETHEUS_TIMEOUT,
    deadline_seconds: float = PROMETHEUS_DEADLINE,
) -> list[tuple[float, float]]:
    """(time, requests per minute) from ``cfg.query`` over ``[start, end)``, in chunks of at most
    ``PROMETHEUS_POINTS_PER_REQUEST`` points."""
    endpoint = query_range_url(cfg.url)
    shown = f"Prometheus {redact_url(endpoint)}"
    token = cfg.bearer_token.get_secret_value() if cfg.bearer_token is not None else ""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    step = float(cfg.step_seconds)
    deadline = time.monotonic() + deadline_seconds
    own_session = session is None
    session = session or requests.Session()
    out: list[tuple[float, float]] = []
    try:
        chunk_start = math.floor(start / step) * step
        while chunk_start < end:
            chunk_end = min(chunk_start + (PROMETHEUS_POINTS_PER_REQUEST - 1) * step, end)
            if time.monotonic() > deadline:
                raise TrafficHistoryError(f"{shown}: the history took longer than {deadline_seconds:g}s to load")
            params = {"query": cfg.query, "start": f"{chunk_start:.3f}", "end": f"{chunk_end:.3f}", "step": f"{step:g}"}
            status, body = _get(session, f"{endpoint}?{urlencode(params)}", headers, timeout, deadline, shown, token)
            out.extend(_parse_matrix(status, body, shown, token))
            chunk_start = chunk_end + step
    finally:
        if own_session:
            session.close()
    return sorted(p for p in out if start <= p[0] < end)


def _scrub(text: str, token: str) -> str:
    """Server text for a message: one line, capped, and never the token (a proxy may echo the header)."""
    if token:
        text = text.replace(token, "***")
    return log_text(text, 300)


def _get(session: requests.Session, url: str, headers: dict[str, str], timeout: float, deadline: float,
         shown: str, token: str) -> tuple[int, bytes]:
    """One GET, body capped at ``PROMETHEUS_MAX_BYTES`` and read before ``deadline`` (monotonic).  Unlike the
    feed helper it keeps the body of an error answer: Prometheus says there what is wrong with the query."""
    try:
        response = session.get(url, headers=headers, timeout=(timeout, timeout), stream=True, allow_redirects=False)
    except requests.Timeout as exc:
        what = "connect" if isinstance(exc, requests.ConnectTimeout) else "read"
        raise TrafficHistoryError(f"{shown}: timed out ({what}, {timeout:g}s)") from None
    except requests.ConnectionError:
        # requests' text embeds the URL with the query: the class name is enough to act on
        raise TrafficHistoryError(f"{shown}: cannot connect") from None
    except requests.RequestException as exc:
        raise TrafficHistoryError(f"{shown}: request failed ({type(exc).__name__})") from None
    with response:
        try:
            return response.status_code, read_capped(response, max_bytes=PROMETHEUS_MAX_BYTES, deadline=deadline)
        except BodyError as exc:
            if exc.kind == "too_large":
                size = f" of {exc.size} bytes" if exc.size is not None else ""
                message = f"answer{size} exceeds the {PROMETHEUS_MAX_BYTES}-byte limit"
            elif exc.kind == "too_slow":
                message = "the answer took too long to arrive"
            elif exc.kind == "timed_out":
                message = f"timed out (read, {timeout:g}s)"
            else:
                message = f"reading the answer failed ({exc.cause})"
            raise TrafficHistoryError(f"{shown}: {message}") from None


def _parse_matrix(status: int, body: bytes, shown: str, token: str) -> list[tuple[float, float]]:
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if status != 200:
        if isinstance(doc, dict) and doc.get("status") == "error":
            # https://prometheus.io/docs/prometheus/latest/querying/api/#format-overview
            kind = _scrub(str(doc.get("errorType") or "error"), token)
            raise TrafficHistoryError(f"{shown}: HTTP {status} {kind}: {_scrub(str(doc.get('error') or ''), token)}")
        hint = " (check bearer_token)" if status in (401, 403) else ""
        text = _scrub(body[:300].decode("utf-8", "replace"), token)
        raise TrafficHistoryError(f"{shown}: HTTP {status}{hint}" + (f": {text}" if text else ""))
    if not isinstance(doc, dict):
        raise TrafficHistoryError(f"{shown}: the answer is not JSON")
    if doc.get("status") != "success":
        raise TrafficHistoryError(f"{shown}: status {_scrub(str(doc.get('status')), token)!r}: "
                                  f"{_scrub(str(doc.get('error') or ''), token)}")
    data = doc.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("result"), list):
        raise TrafficHistoryError(f"{shown}: the answer has no data.result list")
    if data.get("resultType") != "matrix":
        raise TrafficHistoryError(f"{shown}: expected a matrix (range query), got {_scrub(str(data.get('resultType')), token)!r}")
    result = data["result"]
    if len(result) > 1:
        labels = ", ".join(_scrub(json.dumps(r.get("metric", {}) if isinstance(r, dict) else r, sort_keys=True), token)
                           for r in result[:3])
        raise TrafficHistoryError(f"{shown}: the query returns {len(result)} series ({labels}{', ...' if len(result) > 3 else ''}); "
                                  "aggregate it to one, e.g. sum(...)")
    out: list[tuple[float, float]] = []
    for series in result:
        values = series.get("values") if isinstance(series, dict) else None
        if not isinstance(values, list):
            raise TrafficHistoryError(f"{shown}: a series without a values list")
        for point in values:
            if not (isinstance(point, list) and len(point) == 2 and isinstance(point[0], (int, float))
                    and not isinstance(point[0], bool) and isinstance(point[1], str)):
                raise TrafficHistoryError(f"{shown}: malformed sample {_scrub(json.dumps(point)[:80], token)} "
                                          "(expected [unix time, \"value\"])")
            try:
                value = float(point[1])
            except ValueError:
                raise TrafficHistoryError(f"{shown}: sample value {_scrub(point[1], token)!r} is not a number") from None
            if not math.isfinite(value):
                continue  # NaN / Inf: a gap (a counter reset, a division by zero), not data
            if value < 0:
                raise TrafficHistoryError(f"{shown}: negative requests per minute ({value:g}) at {point[0]}: is the "
                                          "query a rate?")
            out.append((float(point[0]), value))
    return out


def load_history(cfg: TrafficHistoryConfig, start: float, end: float, **prometheus: Any) -> list[tuple[float, float]]:
    if cfg.csv is not None:
        return load_csv_history(cfg.csv, start, end)
    assert cfg.prometheus is not None  # the config allows exactly one of the two
    return load_prometheus_history(cfg.prometheus, start, end, **prometheus)


# -- the cached model -----------------------------------------------------------------------------
def _utc_offset(zone: str, at: float) -> float:
    offset = datetime.fromtimestamp(at, ZoneInfo(zone)).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def fingerprint(cfg: TrafficHistoryConfig, bucket_seconds: int, utc_offset_s: float) -> str:
    """What the cached model depends on (not the token: a new token does not change the history)."""
    source: dict[str, Any] = {"csv": cfg.csv} if cfg.csv is not None else {
        "url": cfg.prometheus.url, "query": cfg.prometheus.query, "step": cfg.prometheus.step_seconds,  # type: ignore[union-attr]
    }
    blob = json.dumps({"source": source, "bucket": bucket_seconds, "offset": utc_offset_s, "version": STATE_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fit_brand(rt: Runtime, brand: BrandConfig, at: float) -> TrafficModel:
    """Load the brand's history up to ``at`` and fit (no cache).  Raises TrafficHistoryError."""
    assert brand.traffic is not None
    start = at - HISTORY_DAYS * 86400
    traffic = load_history(brand.traffic, start, at)
    mentions: dict[float, float] = {}
    for series in rt.store.counts(brand.name, start, at).values():
        for t, n in series.items():
            mentions[float(t)] = mentions.get(float(t), 0.0) + float(n)
    return fit_traffic_model(traffic, mentions, start=start, end=at, bucket_seconds=rt.settings.detector.bucket_seconds,
                             mentions_from=min(mentions) if mentions else None,
                             utc_offset_s=_utc_offset(rt.settings.timezone, at))


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def brand_model(rt: Runtime, brand: BrandConfig, at: float) -> TrafficModel | None:
    """The brand's model: cached, refitted when a day old or when its setting changed; the last good one
    while the history cannot be read (None when there is none, or it is older than STALE_MODEL_LIMIT)."""
    assert brand.traffic is not None
    key = STATE_PREFIX + brand.name
    fp = fingerprint(brand.traffic, rt.settings.detector.bucket_seconds, _utc_offset(rt.settings.timezone, at))
    state = rt.store.get_state(key) or {}
    same = state.get("fingerprint") == fp and state.get("version") == STATE_VERSION
    model: TrafficModel | None = None
    fitted_at = _number(state.get("fitted_at")) if same else None
    if same and isinstance(state.get("model"), Mapping):
        try:
            model = TrafficModel.from_dict(state["model"])
        except TrafficModelError as exc:
            log.warning("traffic model of %s in the store is unreadable (%s): refitting", brand.name, exc)
    if model is not None and fitted_at is not None and abs(at - fitted_at) < REFIT_AFTER:
        return model
    stale = model if model is not None and fitted_at is not None and abs(at - fitted_at) < STALE_MODEL_LIMIT else None
    failed_at = _number(state.get("failed_at")) if same else None
    if failed_at is not None and 0 <= at - failed_at < RETRY_FAILED_AFTER:
        return stale
    try:
        fresh = fit_brand(rt, brand, at)
    except TrafficHistoryError as exc:
        log.warning("site traffic history of %s unavailable: %s%s", brand.name, exc,
                    "; using the model fitted earlier" if stale is not None else "")
        rt.store.set_state(key, {"version": STATE_VERSION, "fingerprint": fp,
                                 "fitted_at": fitted_at if stale is not None else None,
                                 "model": stale.to_dict() if stale is not None else None,
                                 "error": str(exc), "failed_at": at})
        return stale
    rt.store.set_state(key, {"version": STATE_VERSION, "fingerprint": fp, "fitted_at": at, "model": fresh.to_dict(),
                             "error": None, "failed_at": None})
    if fresh.calibrated:
        log.info("traffic model of %s: elasticity %.2f, lag %.0f min, %s", brand.name, fresh.elasticity,
                 fresh.lag_seconds / 60, fresh.basis())
    else:
        log.info("traffic model of %s: %s", brand.name, fresh.basis())
    return fresh


# -- the entry point ------------------------------------------------------------------------------
def outlook_from(model: TrafficModel, verdict: Verdict, bucket_seconds: int, at: float) -> TrafficOutlook:
    """The verdict's forecast through the model.  ``at``: the time the notification speaks of (epoch)."""
    per_minute = 60.0 / bucket_seconds
    forecast = verdict.forecast
    # never below what is already observed (the forecast can trail a steep rise)
    peak = max(forecast.peak_rate, verdict.observed) if forecast is not None else verdict.observed
    # the forecast counts from the end of the scored bucket; the message speaks from ``at``
    to_peak = (forecast.seconds_to_peak if forecast is not None else 0.0) + verdict.at + bucket_seconds - at
    p = predict_traffic(model, mention_peak_per_min=peak * per_minute,
                        mention_normal_per_min=verdict.expected * per_minute,
                        seconds_to_mention_peak=to_peak, at=at)
    return TrafficOutlook(normal_rpm=p.normal_rpm, multiple=p.multiple, peak_rpm=p.peak_rpm,
                          seconds_to_peak=p.seconds_to_peak, basis=p.basis, beyond_history=p.beyond_history)


def refresh_models(rt: Runtime, at: float) -> dict[str, str]:
    """Fit (or keep) every configured brand's model, so that notifications only read the cache: a
    beat task runs this hourly, and a fit, which may wait on a slow Prometheus, stays off the alert
    path.  {brand: what its model says} for the log."""
    out: dict[str, str] = {}
    for brand in rt.settings.brands:
        if brand.traffic is not None:
            model = brand_model(rt, brand, at)
            out[brand.name] = model.basis() if model is not None else "no model (history unavailable)"
    return out


def traffic_outlook(rt: Runtime, brand: str, verdict: Verdict, at: float) -> TrafficOutlook | None:
    """Expected site traffic for a notification about ``verdict`` sent at ``at`` (epoch seconds, the end of
    the scored bucket); None for a brand without a ``traffic:`` setting, for a quiet verdict, or when the
    history cannot be read (logged)."""
    try:
        cfg = rt.settings.brand(brand)
    except KeyError:
        return None
    if cfg.traffic is None or verdict.severity is Severity.QUIET:
        return None
    try:
        model = brand_model(rt, cfg, at)
        return outlook_from(model, verdict, rt.settings.detector.bucket_seconds, at) if model is not None else None
    except Exception:  # noqa: BLE001 -- an estimate must never cost the alert; the traceback is logged
        log.exception("traffic outlook for %s failed; the alert goes out without it", brand)
        return None
