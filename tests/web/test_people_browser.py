"""The studio's two-character mode in a real browser (Chromium via Playwright, as test_browser.py):
two characters made over the API, chosen in the Generate tab, rendered side by side with the
tiny engine (128x64, 1 step); the page sends ``people`` + ``layout`` to queue/character/generate
and shows one identity score per person. Screenshots go to tests/output/web/ (git-ignored)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_server import LiveServer, tiny_app  # noqa: E402

CHROMIUM = os.environ.get("FACEANCHOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api")
if CHROMIUM is None:  # CI installs it (README's test command); say so rather than pass silently
    pytest.fail("chromium is not installed: apt-get install -y chromium (the README's test command does)", pytrace=False)

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"
OUT = Path(__file__).resolve().parents[1] / "output" / "web"
pytestmark = pytest.mark.slow  # a live server, Chromium and two character creations: 1-3 min on a busy 2-core machine
JOB_TIMEOUT = 240_000  # ms; the first run loads the tiny models (a busy 2-core machine: minutes)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    app = tiny_app(tmp_path_factory.mktemp("people-home"))
    key, _ = app.state.service.keys.create("studio")
    with LiveServer(app) as srv:
        srv.key = key
        srv.ids = {}
        for name, photo in (("Barack", "obama.jpg"), ("Joe", "biden.jpg")):
            face = "data:image/jpeg;base64," + base64.b64encode((FACES / photo).read_bytes()).decode()
            r = httpx.post(srv.url + "/v1/characters", json={"name": name, "images": {"face": face}}, headers={"x-api-key": key}, timeout=60)
            assert r.status_code == 201, r.text
            srv.ids[name] = r.json()["id"]
        yield srv
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def page(server):
    OUT.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        requests, foreign, errors = [], [], []

        def on_request(r):  # noqa: ANN001, ANN202
            requests.append(r)
            u = urlsplit(r.url)
            if u.scheme not in ("blob", "data") and f"{u.scheme}://{u.netloc}" != server.url:
                foreign.append(r.url)

        context.on("request", on_request)
        pg = context.new_page()
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(server.url + "/web/")
        pg.wait_for_selector("#styles label")
        pg.fill("#key", server.key)
        pg.dispatch_event("#key", "change")
        pg.requests = requests
        yield pg
        assert foreign == [], f"the page asked other hosts: {foreign}"
        assert errors == [], f"script errors: {errors}"
        browser.close()


def _posted(page, path: str) -> dict:
    posts = [r for r in page.requests if r.method == "POST" and urlsplit(r.url).path == path]
    assert posts, f"no POST {path}"
    return json.loads(posts[-1].post_data)


def test_two_characters_side_by_side(page, server):
    barack, joe = server.ids["Barack"], server.ids["Joe"]
    assert page.is_hidden("#people-box")
    page.check("#people-mode")
    assert page.is_visible("#people-box") and page.is_hidden("#photo-box") and page.is_disabled("#identity-source")
    page.wait_for_selector("#person-2 option:has-text('Joe')", state="attached")
    page.select_option("#person-1", label="Barack")
    page.select_option("#person-2", label="Joe")
    page.fill("#person-2-adapter", "1.2")
    page.fill("#f-prompt", "two friends at a cafe")
    page.fill("#f-num_inference_steps", "1")
    page.fill("#f-width", "")
    page.fill("#f-height", "")
    # side by side needs the size: a readable refusal, nothing submitted
    page.click("#submit")
    page.wait_for_selector("#banner:not([hidden])")
    assert "needs the output size" in page.inner_text("#banner")
    assert not [r for r in page.requests if urlsplit(r.url).path == "/queue/character/generate"]
    page.fill("#f-width", "128")
    page.fill("#f-height", "64")
    page.click("#code-box summary")
    page.wait_for_function("document.getElementById('code').textContent.includes('left-right')")
    assert "queue/character/generate" in page.inner_text("#code")
    page.screenshot(path=str(OUT / "20-people-form.png"), full_page=True)
    page.evaluate("document.getElementById('job').dataset.status = ''")
    page.click("#submit")
    page.wait_for_function("['COMPLETED', 'FAILED', 'CANCELLED', 'REFUSED'].includes(document.getElementById('job').dataset.status)"
                           " && !document.getElementById('submit').disabled", timeout=JOB_TIMEOUT)
    assert page.get_attribute("#job", "data-status") == "COMPLETED", page.inner_text("#job-status")
    body = _posted(page, "/queue/character/generate")
    assert body["people"] == [{"character_id": barack}, {"character_id": joe, "adapter_strength": 1.2}]
    assert body["layout"] == "left-right" and body["width"] == 128 and "face_image" not in body and "character_id" not in body
    page.wait_for_selector("#results figure img[src^='blob:']")
    caption = page.inner_text("#results figure figcaption .score")
    assert "identity per person: person 1 n/a · person 2 n/a" in caption and "128×64" in caption, caption
    params = json.loads(page.text_content("#results figure details pre"))
    assert params["more_identities"][0]["adapter_strength"] == 1.2 and params["face_box"][2] <= 64 <= params["more_identities"][0]["box"][0]
    page.screenshot(path=str(OUT / "21-people-result.png"), full_page=True)


def test_a_missing_person_is_named(page):
    page.select_option("#person-2", value="")
    page.click("#submit")
    page.wait_for_function("document.getElementById('banner').textContent.includes('person 2')")
    assert "Choose person 2's character" in page.inner_text("#banner")
    page.uncheck("#people-mode")
    assert page.is_hidden("#people-box") and page.is_visible("#photo-box") and page.is_enabled("#identity-source")
