"""The README's picture: ``freezewatch report DIR --html`` in headless Chromium, as a PNG.

    make demo                      # (and any other demos) write into freezewatch-dumps/
    python scripts/report_screenshot.py freezewatch-dumps docs/report.png

Needs Debian's chromium and chromium-driver and selenium (the test extra).
The first place is shown expanded, the page at 1280 px wide.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="a dump directory")
    ap.add_argument("png", help="where the screenshot goes")
    ap.add_argument("--open", type=int, default=1, help="expand the Nth place (0: none)")
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp, "report.html")
        subprocess.run([sys.executable, "-m", "freezewatch", "report", args.dir, "--html",
                        str(page)], check=True)
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    f"--window-size={args.width},900", f"--user-data-dir={tmp}/profile"):
            opts.add_argument(arg)
        service = Service(executable_path=shutil.which("chromedriver") or "chromedriver")
        driver = webdriver.Chrome(options=opts, service=service)
        try:
            driver.get(page.as_uri())
            if args.open:
                driver.execute_script(
                    "document.querySelectorAll('details.sig-row')[arguments[0]].open = true",
                    args.open - 1)
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(args.width, int(height))
            driver.save_screenshot(args.png)
        finally:
            driver.quit()
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
