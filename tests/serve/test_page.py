"""The web page in a real browser: `taxonlens serve` runs as its own process on 127.0.0.1, and
headless Debian chromium (driven by Playwright) uploads three synthworld photos, one of them
corrupt, at phone width; the breadcrumbs, the bars, the back-off sentence, the error text, the
batch table, its CSV download and the taxonomy search (by keyboard) are checked, and a
screenshot is saved in the test's temporary folder."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from taxonlens.predict.thresholds import calibrate_thresholds, write_thresholds

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(world_dir, recognizer, model_name, tmp_path_factory):
    """``taxonlens serve`` on a free port of 127.0.0.1 (the recognizer of the fixtures, with a
    thresholds file that backs every answer off to its genus); yields its base URL."""
    out = tmp_path_factory.mktemp("serve")
    wanted = dict(recognizer.decoder.thresholds)
    calibration = calibrate_thresholds(recognizer, world_dir / "manifest.jsonl")  # for its reliability diagram
    recognizer.decoder.thresholds = wanted  # (calibrating set the decoder's)
    thresholds = write_thresholds(replace(calibration, thresholds=wanted), recognizer, out / "thresholds.json")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    log = (out / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "taxonlens", "serve", "--model", model_name, "--taxonomy",
                             str(world_dir / "taxonomy.json"), "--precision", "fp32", "--thresholds", str(thresholds),
                             "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=log, cwd=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"taxonlens serve stopped: {(out / 'serve.log').read_text()}"
            assert time.monotonic() < deadline, "taxonlens serve was not ready within 180 s"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                                                   "(.ci/run installs it: apt-get install chromium)")
def test_the_page_names_photos_in_a_real_browser(server, photos, tmp_path):
    from playwright.sync_api import sync_playwright

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(photos[0].read_bytes()[:150])
    uploads = [photos[0], photos[9], corrupt]
    expected = httpx.post(f"{server}/v1/predict", timeout=60, files=[
        ("files", (p.name, p.read_bytes())) for p in uploads[:2]]).json()["predictions"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844}, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(server)
            page.wait_for_function("document.getElementById('about').textContent.includes('labels')")
            page.set_input_files("#files", [str(p) for p in uploads])
            page.wait_for_function("document.querySelectorAll('#results .card').length === 3")
            cards = page.locator("#results .card")
            for i, row in enumerate(expected):
                card = cards.nth(i)
                crumbs = card.locator(".breadcrumb li")
                assert crumbs.count() == 7
                assert [crumbs.nth(d).inner_text().split(maxsplit=1)[1] for d in range(7)] == row["path"]
                assert crumbs.nth(0).inner_text().startswith("kingdom")
                assert card.locator(".breadcrumb li.undetermined").count() == 1  # species: not trusted
                assert card.locator(".verdict").inner_text() == f"genus {row['path'][5]}; species not determined"
                assert card.locator(".bars .bar").count() == 7
                assert card.locator(".bars .threshold").count() == 6  # species: never trusted, no marker
                assert card.locator(".bar-value").nth(6).inner_text().endswith("never trusted")
                assert card.locator(".alternatives li").count() == 4
            error = cards.nth(2).locator(".error").inner_text()
            assert error.startswith("Could not read this photo: corrupt or truncated image")
            assert page.locator("#table tbody tr").count() == 3
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # phone width
            with page.expect_download() as download:
                page.click("#csv")
            with open(download.value.path(), newline="") as f:
                table = list(csv.DictReader(f))
            assert [r["file_name"] for r in table] == [p.name for p in uploads]
            assert [r["path"] for r in table[:2]] == [" > ".join(r["path"]) for r in expected]
            assert [r["rank_reached"] for r in table] == ["genus", "genus", ""]
            assert table[2]["error"].startswith("corrupt or truncated image")
            # the taxonomy search, by keyboard only
            genus = expected[0]["path"][5]
            page.focus("#q")
            page.keyboard.type(genus[:4])
            page.keyboard.press("Enter")
            page.wait_for_function("document.querySelectorAll('#search-results li button').length > 0")
            page.locator("#search-results li button", has_text=genus).first.focus()
            page.keyboard.press("Enter")
            page.wait_for_function(f"document.querySelector('#taxon h3')?.textContent === 'genus {genus}'")
            assert page.locator("#taxon .breadcrumb li").count() == 6
            assert page.locator("#taxon ul li").count() >= 1  # its species
            page.focus("#files")
            assert page.evaluate("document.activeElement.id") == "files"  # the picker is reached by keyboard
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000
