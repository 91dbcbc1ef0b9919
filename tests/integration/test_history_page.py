"""The history over HTTP and on the page: search in a real headless Chromium, the API behind the page's auth,
hostile search text answered cleanly (never a 500)."""
from __future__ import annotations

import io
import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request

import cv2
import numpy as np
import pytest
from mqtt_fixtures import free_port

from streamcap.app import build
from streamcap.config.schema import StreamcapConfig
from streamcap.model.decoding import Description

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
TOKEN = "history-token-0123456789abcdef"


class GateScenes:
    """Stands in for the model: a white van at the gate, then a man walking past, then the van again."""

    model_name = "fake"

    def __init__(self):
        self.n = 0

    def describe(self, frames):
        self.n += 1
        if self.n % 12 < 6:
            return [Description("a white van parked in front of the gate", {"person": 0.04, "vehicle": 0.91}) for _ in frames]
        return [Description("a man walking past the gate", {"person": 0.94, "vehicle": 0.05}) for _ in frames]


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "gate.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 180))
    for i in range(30):
        image = np.full((180, 320, 3), 70, np.uint8)
        cv2.rectangle(image, (i * 8, 60), (i * 8 + 60, 140), (235, 235, 235), -1)
        writer.write(image)
    writer.release()
    return path


def start_app(tmp_path, clip, auth=None):
    port = free_port()
    config = StreamcapConfig.model_validate({
        "device_id": "wall",
        "cameras": {"gate": {"url": str(clip), "loop": True, "caption_interval_s": 0.3},
                    "yard": {"url": str(clip), "loop": True, "caption_interval_s": 0.7}},
        "outputs": {"console": False},
        "http": {"enabled": True, "port": port, **({"auth": auth} if auth else {})},
        "history": {"path": str(tmp_path / "history")},
    })
    app = build(config, captioner=GateScenes(), console_stream=io.StringIO())
    app.start()
    return app, f"http://127.0.0.1:{port}"


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def wait(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def search(base, headers=None, **params):
    status, _, body = get(f"{base}/api/history/search?{urllib.parse.urlencode(params)}", headers)
    return status, json.loads(body)


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,900",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_pages_search_shows_thumbnails_and_a_click_shows_the_segments_captions(tmp_path, clip, browser):
    app, base = start_app(tmp_path, clip)
    try:
        # given a box that has seen a van and a man at the gate for a while
        wait(lambda: len(search(base, q="van")[1].get("results", [])) >= 2 and search(base, q="man")[1].get("results"), 60,
             "two van segments and a man in the history")
        browser.get(base + "/")
        form = wait(lambda: (f := browser.find_element("id", "search")).is_displayed() and f, 30, "the search box")
        # when a person searches for the group word "vehicle"
        browser.find_element("id", "q").send_keys("vehicle")
        form.find_element("css selector", "button").click()
        cards = wait(lambda: browser.find_elements("css selector", "#results .result"), 30, "results")
        # then each result is a thumbnail with camera, time span and caption, newest first
        assert all("a white van parked in front of the gate" in c.text for c in cards), [c.text for c in cards]
        assert all(c.text.startswith("gate") or c.text.startswith("yard") for c in cards)
        assert "–" in cards[0].find_elements("css selector", ".head")[1].text, "a time span"
        wait(lambda: cards[0].find_element("css selector", "img").get_attribute("naturalWidth") not in (None, "0"), 30,
             "the thumbnail")
        assert "for “vehicle”" in browser.find_element("id", "history-title").text
        browser.save_screenshot(str(tmp_path / "history-results.png"))
        # when a result is clicked, then the snapshot and the segment's captions show
        cards[0].click()
        dialog = wait(lambda: (d := browser.find_element("id", "segment")).is_displayed() and d, 10, "the segment")
        lines = wait(lambda: dialog.find_elements("css selector", "#seg-captions li"), 10, "its captions")
        assert all("a white van parked in front of the gate" in li.text for li in lines)
        assert len(lines) == int(cards[0].find_element("css selector", ".head span").text.split()[0])
        wait(lambda: browser.find_element("id", "seg-shot").get_attribute("naturalWidth") not in (None, "0"), 10, "the snapshot")
        assert "vehicle 91%" in dialog.find_element("id", "seg-chips").text
        browser.save_screenshot(str(tmp_path / "history-segment.png"))
        dialog.find_element("id", "seg-close").click()
        # and a search that finds nothing says so
        browser.find_element("id", "q").clear()
        browser.find_element("id", "q").send_keys('fire OR "*')
        form.find_element("css selector", "button").click()
        wait(lambda: "Nothing matches" in browser.find_element("id", "results").text, 30, "an empty answer")
    finally:
        app.stop()


HISTORY_PATHS = ["/api/history/search?q=van", "/api/history/summary?camera=gate", "/api/history/segments/1",
                 "/api/history/cameras", "/history/thumbnails/s1.jpg"]


def test_the_history_api_needs_the_pages_auth(tmp_path, clip):
    app, base = start_app(tmp_path, clip, auth={"token": TOKEN})
    try:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        wait(lambda: search(base, bearer, q="van")[1].get("results"), 60, "a van in the history")
        for path in HISTORY_PATHS:
            # without the token: nothing
            status, _, body = get(base + path)
            assert status == 401 and b"van" not in body, path
            status, _, _ = get(base + path, {"Authorization": "Bearer wrong-token-0123456789abcdef"})
            assert status == 401, path
            # with it: the answer
            status, kind, _ = get(base + path, bearer)
            assert status == 200, path
            assert kind == ("image/jpeg" if path.endswith(".jpg") else "application/json"), path
    finally:
        app.stop()


@pytest.mark.parametrize("query, status, error", [
    ({"q": "van " * 150}, 400, "the search is 600 characters; at most 500"),
    ({"q": 'van" OR NEAR(gate *'}, 200, None),
    ({"q": "'; DROP TABLE segments; --"}, 200, None),
    ({"q": "van", "since": "last tuesday"}, 400, "since 'last tuesday': give a span like 12h"),
    ({"q": "van", "camera": "porch"}, 400, "no camera 'porch' in the history"),
    ({"q": "van", "concept": "vehicle >>= 2"}, 400, "is not a concept condition"),
    ({"q": "van", "limit": "9999999"}, 400, "limit must be"),
    ({"q": "van", "limit": "-1"}, 400, "limit must be a whole number"),
])
def test_hostile_search_parameters_get_a_clean_answer(tmp_path, clip, query, status, error):
    app, base = start_app(tmp_path, clip)
    try:
        wait(lambda: search(base, q="van")[1].get("results"), 60, "a van in the history")
        got, doc = search(base, **query)
        assert got == status, doc
        if error:
            assert error in doc["error"] and "\n" not in doc["error"] and "Traceback" not in doc["error"]
        else:
            assert isinstance(doc["results"], list)
        assert search(base, q="van")[0] == 200, "and the next search works"
        status, _, body = get(base + "/api/history/segments/99999999999")
        assert status == 404 and json.loads(body)["error"]
        status, _, body = get(base + "/history/thumbnails/..%2F..%2Fhistory.db")
        assert status == 404
    finally:
        app.stop()


def test_a_10_kb_search_is_refused_by_the_server_before_it_is_read(tmp_path, clip):
    app, base = start_app(tmp_path, clip)
    try:
        # when the search string is 10 kB, then the HTTP server refuses the request line (bounded), in one line
        status, kind, body = get(f"{base}/api/history/search?{urllib.parse.urlencode({'q': 'van ' * 2560})}")
        assert status == 414 and body.decode().count("\n") == 1 and "Traceback" not in body.decode()
        status, _, body = get(f"{base}/api/history/search?q=van")
        assert status in (200, 503), (status, body)
    finally:
        app.stop()
