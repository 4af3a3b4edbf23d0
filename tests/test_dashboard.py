"""The dashboard at the ops server's ``/``: an HTML page naming each brand, with its chart, the
incidents, source health and deliveries -- over a real socket, and in a real headless browser."""
from __future__ import annotations

import base64
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from surgewatch.config import parse_settings
from surgewatch.ops.server import make_server
from surgewatch.store.sqlite import SqliteStore
from tests.test_metrics import BRANDS, NOW, make_settings, seed


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("surgewatch.clock.now", lambda: NOW)


def serve(settings: Any, store: Any) -> Iterator[str]:
    srv = make_server(settings, port=0, store=store)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.port}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def seeded(tmp_path: Path, frozen_now: None) -> Iterator[tuple[str, dict[str, Any]]]:
    settings = make_settings(tmp_path)
    store = SqliteStore(str(tmp_path / "store.db"))
    seeded = seed(store)
    yield from ((url, seeded) for url in serve(settings, store))
    store.close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def test_the_page_names_every_brand_with_a_chart_and_shows_incidents_sources_and_deliveries(seeded) -> None:
    url, s = seeded
    code, page, headers = get(url + "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "<h2 class=\"brand\">Acme" in page
    assert "Bolt &#34;&amp;&#34; Co" in page  # the brand name that needs escaping, escaped
    charts = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(charts) == len(BRANDS)
    assert all(base64.b64decode(c).startswith(b"\x89PNG") for c in charts)
    assert s["incident"]["id"] in page and s["other"]["id"] in page
    assert "HTTP 503 from hn.algolia.com" in page  # a failing source's error
    assert "pagerduty trigger: HTTP 400 invalid routing key" in page  # a failed delivery, in its words
    assert "<script" not in page  # read-only and self-contained: nothing runs, nothing is fetched
    assert not re.search(r'(src|href)="https?://', page)


def test_the_metrics_and_health_endpoints_stay_open_when_the_dashboard_needs_a_token(tmp_path, frozen_now,
                                                                                      monkeypatch) -> None:
    monkeypatch.setenv("SURGEWATCH_DASHBOARD_TOKEN", "dash-token-123456")
    settings = make_settings(tmp_path)
    store = SqliteStore(str(tmp_path / "store.db"))
    seed(store)
    for url in serve(settings, store):
        code, _, headers = get(url + "/")
        assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert get(url + "/", {"Authorization": "Bearer wrong"})[0] == 401
        code, page, _ = get(url + "/", {"Authorization": "Bearer dash-token-123456"})
        assert code == 200 and "Acme" in page
        assert get(url + "/metrics")[0] == 200
    store.close()


def test_basic_auth_for_the_dashboard(tmp_path, frozen_now, monkeypatch) -> None:
    monkeypatch.setenv("SURGEWATCH_DASHBOARD_PASSWORD", "s3cret-pass")
    settings = parse_settings({**make_settings(tmp_path).model_dump(mode="json", by_alias=True, exclude_none=True),
                               "ops": {"dashboard_user": "ops"}}, env={})
    store = SqliteStore(str(tmp_path / "store.db"))
    for url in serve(settings, store):
        assert get(url + "/")[0] == 401
        good = "Basic " + base64.b64encode(b"ops:s3cret-pass").decode()
        bad = "Basic " + base64.b64encode(b"ops:guess").decode()
        assert get(url + "/", {"Authorization": bad})[0] == 401
        assert get(url + "/", {"Authorization": good})[0] == 200
    store.close()


def _browser() -> Any:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        reason = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
def test_a_real_browser_renders_the_dashboard_with_its_charts(seeded, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    url, s = seeded
    browser = _browser()
    try:
        browser.get(url + "/")
        brands = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "h2.brand")]
        assert brands and brands[0].startswith("Acme")  # an open incident first
        images = browser.find_elements(By.TAG_NAME, "img")
        assert len(images) == len(BRANDS)
        widths = [browser.execute_script("return arguments[0].naturalWidth", img) for img in images]
        assert all(w == 900 for w in widths), widths  # decoded, at the chart's size
        assert s["incident"]["id"] in browser.find_element(By.TAG_NAME, "body").text
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        browser.quit()
