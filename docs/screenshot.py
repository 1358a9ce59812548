"""Regenerate docs/search_page.png: `cpcl serve` on an index, one query typed in headless Chromium.

    python docs/screenshot.py --index runs/demo/index --query "a woman in a red coat with a black bag"

Needs Debian's chromium and chromium-driver (`make browser`) and selenium (installed by `make test`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="runs/demo/index")
    parser.add_argument("--query", default="a woman in a red coat with a black bag")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "search_page.png"))
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from cpcl.retrieval.launch import serve_in_subprocess

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,720"):
        options.add_argument(flag)
    with serve_in_subprocess(args.index) as server:
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            _screenshot(driver, server.url, args.query, args.k, args.out)
        finally:
            driver.quit()


def _screenshot(driver, url: str, query: str, k: int, out: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#examples button.example"))
    driver.find_element(By.ID, "query").send_keys(query)
    driver.find_element(By.CSS_SELECTOR, "select#k").send_keys(str(k))
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: d.execute_script(
        "const imgs = [...document.querySelectorAll('#results img')];"
        "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)"))
    driver.save_screenshot(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
