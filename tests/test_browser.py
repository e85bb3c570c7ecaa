"""The page at `/` in headless Chromium, against a real uvicorn server: a generated WAV uploaded
through the file input, and a recording from Chromium's fake microphone (MediaRecorder → WebM/Opus
→ decoded in the page → 16-bit WAV upload); the rendered label, bars and timeline are checked.

Needs Chromium and its WebDriver (Debian: ``apt-get install chromium chromium-driver``) and
selenium (the dev extra); skipped with the reason otherwise."""
from __future__ import annotations

import json
import os
import shutil
import urllib.request

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'camser[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'camser[serve]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

from conftest import LiveServer, write_tone  # noqa: E402

from camser.inference.recognizer import EmotionRecognizer  # noqa: E402
from camser.serve.app import create_app  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _find(*names):
    for n in names:
        path = shutil.which(n) or (n if os.path.isfile(n) else None)
        if path:
            return path
    return None


CHROMIUM = _find(os.environ.get("CAMSER_CHROMIUM", ""), "chromium", "chromium-browser", "/usr/bin/chromium",
                 "google-chrome")
DRIVER = _find(os.environ.get("CAMSER_CHROMEDRIVER", ""), "chromedriver", "/usr/bin/chromedriver",
               "/usr/lib/chromium/chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("headless Chromium and chromedriver are not installed "
                "(Debian/Ubuntu: apt-get install chromium chromium-driver)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tiny_model_folder):
    recognizer = EmotionRecognizer.from_pretrained(tiny_model_folder.model_dir, device="cpu")
    with LiveServer(create_app(recognizer)) as s:
        s.recognizer = recognizer
        yield s


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1000,1200"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    except Exception as e:                       # e.g. driver/browser version mismatch
        pytest.skip(f"Chromium could not be started through {DRIVER}: {str(e).splitlines()[0]}")
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def wait_for_result(driver, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element("tag name", "body").get_attribute("data-state") in ("done", "error"))
    state = driver.find_element("tag name", "body").get_attribute("data-state")
    assert state == "done", driver.execute_script("return window.camser.error")
    return driver.execute_script("return window.camser.last")


def check_rendered(driver, result, labels):
    q = driver.find_elements
    assert driver.find_element("id", "label").text == result["label"]
    bars = q("css selector", "#bars rect.bar")
    assert [b.get_attribute("data-label") for b in bars] == labels
    widths = {b.get_attribute("data-label"): float(b.get_attribute("width")) for b in bars}
    assert max(widths, key=widths.get) == result["label"] and all(w > 0 for w in widths.values())
    assert sum(float(b.get_attribute("data-p")) for b in bars) == pytest.approx(1.0, abs=1e-3)
    segs = q("css selector", "#timeline rect.seg")
    assert [s.get_attribute("data-label") for s in segs] == [s["label"] for s in result["segments"]]
    assert len(q("css selector", "#timeline polyline.line")) == len(labels)
    assert driver.find_element("id", "result").is_displayed()


def test_upload_through_the_file_input(server, browser, tmp_path):
    wav = write_tone(tmp_path / "speech test.wav", 7.5, sr=22050)           # 3 segments, resampled
    browser.get(server.url + "/")
    assert browser.title.startswith("camser")
    browser.find_element("id", "file").send_keys(str(wav))
    result = wait_for_result(browser)
    expected = server.recognizer.predict(str(wav)).to_dict() | {"path": "speech test.wav"}
    assert result == expected
    check_rendered(browser, result, server.recognizer.labels)
    assert len(result["segments"]) == 3
    assert "speech test.wav" in browser.find_element("id", "meta").text
    assert "ang, sad, hap, neu" in browser.find_element("id", "model").text


def test_a_file_the_server_cannot_read_is_converted_in_the_page(server, browser):
    """A WebM/Opus file (what MediaRecorder makes; libsndfile can't read it) gets 415, then the
    page decodes it and uploads a WAV."""
    browser.get(server.url + "/")
    made = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const ctx = new AudioContext();
        const osc = ctx.createOscillator(); osc.frequency.value = 220;
        const dest = ctx.createMediaStreamDestination(); osc.connect(dest); osc.start();
        const rec = new MediaRecorder(dest.stream); const chunks = [];
        rec.ondataavailable = (e) => chunks.push(e.data);
        rec.onstop = async () => {
          const blob = new Blob(chunks, {type: rec.mimeType});
          window.__webm = blob; done(rec.mimeType + ' ' + blob.size);
        };
        rec.start(); setTimeout(() => rec.stop(), 1500);
    """)
    assert "webm" in made or "ogg" in made
    browser.execute_script("window.camser.predict(window.__webm, 'tone.webm', false)")
    result = wait_for_result(browser)
    assert result["path"] == "tone.wav" and result["label"] in server.recognizer.labels
    check_rendered(browser, result, server.recognizer.labels)


def test_record_from_the_microphone(server, browser):
    browser.get(server.url + "/")
    record = browser.find_element("id", "record")
    record.click()
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return window.camser.state") == "recording")
    browser.execute_async_script("setTimeout(arguments[arguments.length - 1], 2000)")
    record.click()
    result = wait_for_result(browser)
    assert result["path"] == "recording.wav" and result["segments"]
    check_rendered(browser, result, server.recognizer.labels)


def test_the_page_loads_nothing_external(server, browser):
    browser.get(server.url + "/")
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(server.url) for u in urls), urls
    with urllib.request.urlopen(server.url + "/openapi.json") as r:      # the same server answers the API
        assert "/v1/predict" in json.load(r)["paths"]
