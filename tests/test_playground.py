"""The playground page in a real browser: headless Chromium (Debian's) driven by Playwright,
against the real service (espeak) on 127.0.0.1.

It types Chinese and English, speaks whole and streamed, and checks that audio of a plausible
length arrived and played to its end, that the timing figures and the voice appear, that a bad
input shows the service's 400 message, and that with keys on the page asks for one.  A
screenshot of each run lands in the test's temporary directory for a person to look at.

``./dev test`` installs Chromium (apt) and Playwright (pip); without them these tests are
skipped, except in CI (``KUBETTS_REQUIRE_BROWSER=1``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request

import pytest
from service_process import running_service

CHROMIUM = os.environ.get("KUBETTS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Headless, and nothing reaching out: this machine's network is closed (and a test's should be).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
KEY = "page-test-key"
PLAY_TIMEOUT_MS = 120_000


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        reason = f"playwright is not installed: {exc}"
    else:
        if os.path.exists(CHROMIUM):
            return sync_playwright
        reason = f"no Chromium at {CHROMIUM}"
    if os.environ.get("KUBETTS_REQUIRE_BROWSER"):
        pytest.fail(f"the browser tests must run here: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _browser_or_skip()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def service():
    with running_service(TTS_ENGINE="espeak") as running:
        yield running


@pytest.fixture
def page(browser, service):
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.goto(service.url + "/")
    wait_for_voices(page)
    page.expected_console_errors = []  # a test that provokes an error response names it here
    yield page
    context.close()
    unexpected = [e for e in errors if not any(x in e for x in page.expected_console_errors)]
    assert unexpected == [], unexpected  # no script errors, no failed loads, nothing the CSP blocked


def wait_for_voices(page) -> None:
    """Until the voice list has arrived.  A selector, not wait_for_function: Playwright evaluates a
    polled function with eval, which the page's Content-Security-Policy (rightly) refuses."""
    page.wait_for_selector("#voice optgroup[label='voices'] option", state="attached")


def speak(page, text: str, *, stream: bool = False, fmt: str = "wav") -> dict:
    page.fill("#text", text)
    page.select_option("#format", fmt)
    page.set_checked("#stream", stream)
    page.click("#speak")
    page.wait_for_selector("#result[data-played='true']", state="attached", timeout=PLAY_TIMEOUT_MS)
    return {
        "audio_seconds": float(page.get_attribute("#result", "data-audio-seconds")),
        "bytes": int(page.get_attribute("#result", "data-bytes")),
        "ttfa": page.text_content("#ttfa"),
        "total": page.text_content("#total"),
        "voice": page.text_content("#voice-used"),
        "download": page.get_attribute("#download", "href"),
    }


FIGURE = re.compile(r"^\d+\.\d\d s$")


def test_the_page_speaks_chinese_whole_and_english_streamed(page, tmp_path):
    chinese = speak(page, "你好，欢迎使用 kubetts。今天天气不错。")
    # espeak speaks a few characters a second: a couple of seconds for this, not 0, not minutes.
    assert 1.0 < chinese["audio_seconds"] < 30, chinese
    assert chinese["bytes"] > 44 + 2 * 24_000 * 0.5
    assert FIGURE.match(chinese["ttfa"]) and FIGURE.match(chinese["total"]), chinese
    assert chinese["voice"] == "cmn" and chinese["download"].startswith("blob:")
    page.screenshot(path=str(tmp_path / "playground-chinese.png"), full_page=True)

    english = speak(page, "Hello there. This sentence is streamed as it is made.", stream=True, fmt="pcm")
    assert 1.0 < english["audio_seconds"] < 30 and english["bytes"] % 2 == 0, english
    assert abs(english["bytes"] / (2 * 24_000) - english["audio_seconds"]) < 0.01  # every sample arrived
    assert FIGURE.match(english["ttfa"]) and english["voice"].startswith("en"), english
    page.screenshot(path=str(tmp_path / "playground-english-stream.png"), full_page=True)


def test_a_bad_input_shows_the_services_message(page, service, tmp_path):
    page.expected_console_errors.append("status of 400")  # Chromium logs the 400 it was given
    page.fill("#text", "")
    page.click("#speak")
    page.wait_for_selector("#error:not([hidden])")
    shown = page.text_content("#error")
    request = urllib.request.Request(
        service.url + "/v1/audio/speech",
        data=json.dumps({"input": "", "response_format": "wav", "speed": 1}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=30)
    expected = json.loads(answer.value.read())["error"]
    assert expected["message"] in shown and "HTTP 400" in shown, shown
    page.screenshot(path=str(tmp_path / "playground-error.png"), full_page=True)


def test_with_keys_on_the_page_asks_for_one_and_sends_it(browser):
    with running_service(TTS_ENGINE="espeak", TTS_API_KEYS=KEY) as locked:
        context = browser.new_context()
        page = context.new_page()
        page.goto(locked.url + "/")  # the page itself needs no key
        page.wait_for_selector("#key-panel:not([hidden])")  # shown with the 401's message
        assert "requires an API key" in page.text_content("#error")
        page.fill("#api-key", KEY)
        page.dispatch_event("#api-key", "change")
        wait_for_voices(page)
        result = speak(page, "With a key.")
        assert result["audio_seconds"] > 0.3
        stored = page.evaluate(
            "JSON.stringify([Object.keys(localStorage), Object.keys(sessionStorage), document.cookie])"
        )
        assert stored == '[[],[],""]'  # the key is kept nowhere but the page's memory
        context.close()
