"""End to end: `cpcl serve` in its own process, the page in headless Chromium, a typed query, rendered results.

Needs Debian's chromium and chromium-driver (`make browser` installs them; `make test` runs it first).
Skipped where they are missing, unless CPCL_REQUIRE_BROWSER=1 (as in CI), where that is a failure.
The screenshot is written to $CPCL_TEST_ARTIFACTS (default: test-artifacts/) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cpcl.retrieval.launch import serve_in_subprocess
from cpcl.retrieval.retriever import load_retriever
from cpcl.retrieval.service import build_index

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("CPCL_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def _require_browser():
    missing = [name for name, found in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        reason = f"headless browser test needs {', '.join(missing)}: run `make browser`"
        if os.environ.get("CPCL_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture()
def server(gallery, tiny_checkpoint, tmp_path):
    _require_browser()
    index_dir = tmp_path / "idx"
    build_index(load_retriever(tiny_checkpoint), gallery, index_dir)
    with serve_in_subprocess(index_dir, timeout=60) as running:
        yield running.url


def _chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,800"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_search_page_in_headless_chromium(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chrome()
    try:
        driver.get(server + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#examples button.example"))
        driver.find_element(By.ID, "query").send_keys("a man in a blue jacket and black trousers")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results figure.hit img")) == 10)
        # every result image was fetched from /images/ and decoded by the browser
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))
        captions = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results figcaption")]
        assert captions[0].startswith("#1 ·") and captions[-1].startswith("#10 ·")
        assert "10 results" in driver.find_element(By.ID, "status").text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "search_page.png"))

        # a malformed request shows the server's message instead of results
        driver.execute_script("document.getElementById('query').value = 'x'.repeat(600);"
                              "document.getElementById('query').removeAttribute('maxlength');")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: "at most 500 characters" in d.find_element(By.ID, "error").text)

        # an example chip runs its query
        driver.find_element(By.CSS_SELECTOR, "#examples button.example").click()
        wait.until(lambda d: d.find_element(By.ID, "error").text == "")
        wait.until(lambda d: "results for" in d.find_element(By.ID, "status").text)
    finally:
        driver.quit()


def test_api_docs_page_renders_offline_in_headless_chromium(server):
    """The machine has no route to a CDN: the page must render every endpoint from /openapi.json by itself."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chrome()
    try:
        driver.get(server + "/api/docs")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#endpoints section")) >= 2)
        headings = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#endpoints h2")]
        assert any("/api/search" in h for h in headings) and any("/api/info" in h for h in headings)
        assert "≤ 100" in driver.find_element(By.ID, "endpoints").text  # k's limit, read from the schema
        assert driver.find_element(By.ID, "error").text == ""
    finally:
        driver.quit()


def test_a_server_with_a_token_in_headless_chromium(gallery, tiny_checkpoint, tmp_path):
    """`cpcl serve --token-file`: refused without it; one visit with ?token= and the page, its API calls and its
    images work from the cookie, with the token gone from the address bar."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _require_browser()
    index_dir = tmp_path / "idx"
    build_index(load_retriever(tiny_checkpoint), gallery, index_dir)
    (tmp_path / "token").write_text("tok-3f9a-7c21-e04b-55d8\n")
    with serve_in_subprocess(index_dir, "--token-file", str(tmp_path / "token"), timeout=60) as running:
        driver = _chrome()
        try:
            driver.get(running.url + "/")
            assert "needs its token" in driver.find_element(By.TAG_NAME, "body").text
            driver.get(running.url + "/?token=tok-3f9a-7c21-e04b-55d8")
            wait = WebDriverWait(driver, 30)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#examples button.example"))
            assert "token" not in driver.current_url
            driver.find_element(By.ID, "query").send_keys("a woman in a red coat")
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results figure.hit img")) == 10)
            wait.until(lambda d: d.execute_script(
                "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))
        finally:
            driver.quit()
