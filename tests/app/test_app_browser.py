"""`audiocraft-patched app` served for real: driven by headless Chromium (Playwright) and by gradio_client.

The browser is Debian's `chromium` (Playwright's own download does not work offline); `.ci/run`
installs it. Missing browser: a failure in CI, a skip elsewhere.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.request import urlopen

import pytest
import soundfile

from conftest import minilm_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROMPT = "a quiet slow flute melody in a low register with sparse hi-hats"


def _need(condition: bool, message: str) -> None:
    if not condition:
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free localhost port, offering default, a naive MiniLM swap of it and a broken folder."""
    from audiocraft_patched.default_model import default_model_dir
    from audiocraft_patched.swap import swap_checkpoint

    root = tmp_path_factory.mktemp("app")
    swapped = swap_checkpoint(default_model_dir(), minilm_dir(), root / "default-minilm")
    broken = root / "broken"
    broken.mkdir()
    (broken / "state_dict.bin").write_bytes(b"not a checkpoint")
    (broken / "compression_state_dict.bin").write_bytes(b"not a checkpoint")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(root / "gr"), "TMPDIR": str(root)}  # the server's files stay in the test's folder
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "audiocraft_patched.cli", "app", str(swapped), str(broken),
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited: {(root / 'server.log').read_text()}")
        try:
            urlopen(url, timeout=2).read()
            break
        except OSError:
            time.sleep(0.5)
    else:
        pytest.fail("the app did not answer within 120 s")
    yield {"url": url, "pid": proc.pid, "models": ["default", str(swapped), str(broken)]}
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    _need(CHROMIUM is not None, "no chromium: apt-get install -y chromium (.ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _need(sync_playwright is not None, "no playwright: pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def _open(browser, server, duration: float):
    page = browser.new_page()
    page.goto(server["url"])
    page.wait_for_selector("#generate", timeout=60_000)
    page.locator("#prompt textarea").fill(PROMPT)
    box = page.locator("#duration input[type=number]")
    box.fill(str(duration))
    box.press("Enter")
    return page


def _pick(page, slot: str, name: str) -> None:
    page.locator(f"#model-{slot} input").click()
    page.get_by_role("option", name=name, exact=True).click()


def _played_wav(page, slot: str):
    """Download what slot `slot`'s player plays; return (samples, sample_rate)."""
    link = page.locator(f"#audio-{slot} a[download]")
    link.wait_for(state="attached", timeout=180_000)
    body = page.request.get(link.get_attribute("href")).body()
    return soundfile.read(io.BytesIO(body))


def test_generate_in_the_browser(browser, server):
    page = _open(browser, server, 1.2)
    page.click("#generate")
    wav, rate = _played_wav(page, "A")
    assert rate == 16000 and abs(len(wav) / rate - 1.2) < 1 / 50  # the requested duration, to a frame
    assert "ms/step" in page.locator("#info-A").inner_text()
    page.click("#score")
    page.wait_for_selector("#score-A table", timeout=60_000)
    assert "attributes asked for" in page.locator("#score-A").inner_text()
    page.close()


def test_ab_mode_shows_two_players(browser, server, tmp_path):
    page = _open(browser, server, 0.6)
    _pick(page, "B", server["models"][1])
    page.click("#generate")
    a, _ = _played_wav(page, "A")
    b, _ = _played_wav(page, "B")
    assert len(a) == len(b) == round(0.6 * 16000)
    assert "new (random" in page.locator("#info-B").inner_text() or "swap" in page.locator("#info-B").inner_text()
    assert page.locator("#audio-C a[download]").count() == 0
    page.screenshot(path=str(tmp_path / "ab.png"), full_page=True)
    page.close()


def test_errors_show_on_the_page_and_the_server_keeps_serving(browser, server):
    page = _open(browser, server, 0.4)
    _pick(page, "B", server["models"][2])
    page.click("#generate")
    page.wait_for_function("document.querySelector('#info-B') && "
                           "document.querySelector('#info-B').innerText.includes('failed to load')", timeout=120_000)
    wav, _ = _played_wav(page, "A")  # the healthy model in the same request still answers
    assert len(wav) == round(0.4 * 16000)
    page.close()


def test_api_endpoints_and_load(server):
    """10 concurrent `generate` calls through gradio_client: all answer, right durations, memory flat."""
    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    assert client.predict(api_name="/models") == server["models"]
    client.predict(PROMPT, "default", 0, 0.3, api_name="/generate")  # warm: the model is loaded now
    before = _rss_kb(server["pid"])
    durations = [0.2 + 0.1 * (i % 5) for i in range(10)]
    with ThreadPoolExecutor(10) as pool:
        paths = list(pool.map(lambda d: Client(server["url"], verbose=False).predict(
            PROMPT, "default", 1, d, api_name="/generate"), durations))
    for path, duration in zip(paths, durations):
        info = soundfile.info(path)
        assert info.samplerate == 16000 and info.frames == round(duration * 16000)
    after = _rss_kb(server["pid"])
    assert after <= 1.10 * before, f"server memory grew from {before} kB to {after} kB"
    with pytest.raises(Exception, match="unknown model"):
        client.predict(PROMPT, "nope", 0, 0.3, api_name="/generate")
    with pytest.raises(Exception, match="duration must be in"):
        client.predict(PROMPT, "default", 0, 99, api_name="/generate")
