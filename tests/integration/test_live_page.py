"""The live page in a real headless Chromium: tiles per camera, captions and alarms arriving live, auth, no secrets."""
from __future__ import annotations

import io
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from streamcap.app import build
from streamcap.config.schema import StreamcapConfig
from streamcap.model.decoding import Description

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")
TOKEN = "test-token-0123456789abcdef"


class Counts:
    """Stands in for the model: a caption that changes with every batch, so a live update is visible."""

    model_name = "fake"

    def __init__(self):
        self.n = 0

    def describe(self, frames):
        self.n += 1
        return [Description(f"a man walks past the gate {self.n}", {"person": 0.93, "vehicle": 0.04}) for _ in frames]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "yard.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 180))
    for i in range(30):
        image = np.full((180, 320, 3), 70, np.uint8)
        cv2.rectangle(image, (i * 8, 60), (i * 8 + 40, 140), (230, 230, 230), -1)
        writer.write(image)
    writer.release()
    return path


def run_app(tmp_path, clip, auth=None, allowed_hosts=None, **http):
    rules = tmp_path / "rules.yaml"
    rules.write_text("- id: someone\n  alias: Someone at the gate\n  cameras: [gate]\n"
                     "  triggers: [{trigger: caption, concept: 'person >= 0.7'}]\n")
    port = free_port()
    config = StreamcapConfig.model_validate({
        "device_id": "wall",
        "cameras": {
            "gate": {"url": str(clip), "loop": True, "caption_interval_s": 0.5},
            "yard": {"url": str(clip), "loop": True, "caption_interval_s": 0.7},
            # unreachable, with credentials that must never reach the page
            "back": {"url": "rtsp://admin:hunter2-secret@127.0.0.1:1/stream", "open_timeout_s": 0.5},
        },
        "rules": {"paths": [str(rules)], "reload": False},
        "outputs": {"console": False, "jsonl": str(tmp_path / "events.jsonl")},
        "http": {"enabled": True, "port": port, **({"auth": auth} if auth else {}),
                 **({"allowed_hosts": allowed_hosts} if allowed_hosts else {}), **http},
    })
    app = build(config, captioner=Counts(), console_stream=io.StringIO())
    app.start()
    return app, f"http://127.0.0.1:{port}"


def chromium(tmp_path, *extra_flags):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,900",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", *extra_flags):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser(tmp_path):
    driver = chromium(tmp_path)
    yield driver
    driver.quit()


@pytest.fixture
def rebinding_browser(tmp_path):
    """A browser whose DNS says what an attacker's would after rebinding: these names are 127.0.0.1."""
    driver = chromium(tmp_path, "--host-resolver-rules=MAP rebind.example 127.0.0.1, MAP wall.example 127.0.0.1")
    yield driver
    driver.quit()


def wait(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_page_shows_every_camera_and_new_captions_and_alarms_arrive_without_reload(tmp_path, clip, browser):
    threads_before = set(threading.enumerate())
    app, url = run_app(tmp_path, clip)
    try:
        # given the page open in a browser
        browser.get(url + "/")
        tiles = wait(lambda: browser.find_elements("css selector", ".tile"), 30, "camera tiles")
        assert sorted(t.get_attribute("data-camera") for t in tiles) == ["back", "gate", "yard"]
        gate = browser.find_element("css selector", '.tile[data-camera="gate"]')
        first = wait(lambda: "walks past" in gate.find_element("css selector", ".caption").text and
                     gate.find_element("css selector", ".caption").text, 30, "a first caption")
        loads = browser.execute_script("return performance.getEntriesByType('navigation').length")
        # when the pipeline goes on captioning, then the caption changes in place, with its frame and concepts
        wait(lambda: gate.find_element("css selector", ".caption").text != first, 30, "a newer caption")
        assert browser.execute_script("return performance.getEntriesByType('navigation').length") == loads, "no reload"
        assert wait(lambda: gate.find_element("css selector", ".picture img").get_attribute("naturalWidth") not in (None, "0"),
                    30, "the frame picture")
        assert "person 93%" in gate.find_element("css selector", ".chips").text
        # and the alarm shows on the tile and in the list, under the rule's alias
        wait(lambda: "alarm" in gate.get_attribute("class"), 30, "the alarm on the gate tile")
        assert "Someone at the gate" in gate.find_element("css selector", ".banner").text
        wait(lambda: "Someone at the gate · gate" in browser.find_element("id", "alarms").text, 30, "the alarm in the list")
        # the unreachable camera is shown as such, and its password appears nowhere
        back = browser.find_element("css selector", '.tile[data-camera="back"]')
        wait(lambda: back.find_element("css selector", ".badge").text.lower() in ("down", "reconnecting"), 30, "the back camera down")
        assert "hunter2" not in browser.page_source
        assert wait(lambda: browser.find_element("id", "live").text == "live", 10, "the live indicator")
        browser.save_screenshot(str(tmp_path / "live-page.png"))
    finally:
        app.stop()
    assert not [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()], "every thread joined"


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_with_auth_nothing_is_served_without_the_token_and_the_browser_logs_in_once(tmp_path, clip, browser):
    app, url = run_app(tmp_path, clip, auth={"token": TOKEN})
    try:
        for path in ("/", "/api/state", "/events", "/metrics", "/healthz", "/cameras/gate/frame.jpg"):
            assert get(url + path)[0] == 401, path
        status, body = get(url + "/api/state", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and json.loads(body)["device"] == "wall"
        assert b"hunter2" not in body and b"admin" not in body
        # an unknown camera is a 404, not a traceback
        assert get(url + "/cameras/nosuch/frame.jpg", {"Authorization": f"Bearer {TOKEN}"})[0] == 404
        # the token in the address is no credential anywhere but on the page's first load
        assert get(f"{url}/api/state?token={TOKEN}")[0] == 401
        assert get(f"{url}/healthz?token={TOKEN}")[0] == 401
        # the browser: /?token=... once sets a cookie, then the page, its images and its events work
        browser.get(f"{url}/?token={TOKEN}")
        assert browser.current_url == url + "/"
        wait(lambda: browser.find_elements("css selector", '.tile[data-camera="gate"] .picture img'), 30, "a frame through the cookie")
        wait(lambda: browser.find_element("id", "live").text == "live", 20, "the event stream through the cookie")
    finally:
        app.stop()


def test_binding_beyond_loopback_without_auth_is_a_config_error(tmp_path):
    from streamcap.config.load import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("http:\n  enabled: true\n  host: 0.0.0.0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.problems[0].startswith(f"{path}:1:1: http: host 0.0.0.0 exposes") and "add auth" in err.value.problems[0]


def test_a_page_elsewhere_cannot_read_the_cameras_through_dns_rebinding(tmp_path, clip, rebinding_browser):
    # given the page on loopback without auth, and a name an attacker controls that now resolves to 127.0.0.1
    app, url = run_app(tmp_path, clip, allowed_hosts=["wall.example"])
    port = url.rsplit(":", 1)[1]
    try:
        # when the browser opens the attacker's name (the attacker's page, same origin as that name)
        rebinding_browser.get(f"http://rebind.example:{port}/")
        # then neither the page nor anything its script asks for is served
        body = rebinding_browser.find_element("tag name", "body").text
        assert "does not answer to the host name 'rebind.example'" in body and "http.allowed_hosts" in body
        for path in ("/api/state", "/healthz", "/metrics", "/cameras/gate/frame.jpg", "/events"):
            status = rebinding_browser.execute_script(
                "return fetch(arguments[0]).then(r => r.status)", f"http://rebind.example:{port}{path}")
            assert status == 403, path
        # while a name in http.allowed_hosts gets the live page
        rebinding_browser.get(f"http://wall.example:{port}/")
        wait(lambda: rebinding_browser.find_elements("css selector", ".tile"), 30, "camera tiles under an allowed name")
        wait(lambda: rebinding_browser.find_element("id", "live").text == "live", 20, "the event stream under an allowed name")
    finally:
        app.stop()


def test_a_page_beyond_the_event_stream_cap_says_so_and_goes_live_when_one_closes(tmp_path, clip, browser):
    # given a box that allows one live page
    app, url = run_app(tmp_path, clip, max_event_streams=1)
    try:
        browser.get(url + "/")
        wait(lambda: browser.find_element("id", "live").text == "live", 20, "the first page live")
        first = browser.current_window_handle
        # when a second page opens, then it says it is not live, and why
        browser.switch_to.new_window("tab")
        browser.get(url + "/")
        wait(lambda: "too many pages open" in browser.find_element("id", "live").text, 20, "the second page refused")
        wait(lambda: browser.find_elements("css selector", ".tile"), 20, "its tiles from /api/state all the same")
        # when the first page closes, then the second goes live by itself
        second = browser.current_window_handle
        browser.switch_to.window(first)
        browser.close()
        browser.switch_to.window(second)
        wait(lambda: browser.find_element("id", "live").text == "live", 30, "the second page live after the first closed")
    finally:
        app.stop()
