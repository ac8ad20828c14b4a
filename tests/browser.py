"""A real headless Chromium for the tests of the HTML pages: Debian's chromium driven through its
chromedriver by selenium, both found on PATH (nothing downloads a browser or a driver). Under
PROTOLAB_STRICT=1 a missing one fails the test; otherwise it skips with the reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, require_tool

#: Where screenshots and measurements go (gitignored): $PROTOLAB_ARTIFACTS, else test-artifacts/.
ARTIFACTS = Path(os.environ.get("PROTOLAB_ARTIFACTS") or ROOT / "test-artifacts")
#: The viewport of every page and screenshot.
VIEWPORT = {"width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
#: Flags that keep chromium off the network it would otherwise try (updates, sync, QUIC).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def start_chromium(profile: Path):
    """A headless chromium with its own profile in `profile`; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The service names the driver: selenium-manager never runs, nothing is downloaded.
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", VIEWPORT)
    return driver


def open_page(driver, path: Path, timeout: float = 20) -> float:
    """Open `path` from file:// and wait for the page's own ready flag; return its render time
    (ms since navigation started, as the page measured it)."""
    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return window.ladderReady === true"))
    return float(driver.execute_script(
        "return document.documentElement.dataset.renderedMs"))


#: Scroll the ladder from top to bottom, a half view at a time, and collect every row drawn.
_COLLECT = """
const done = arguments[arguments.length - 1];
const sc = document.getElementById("scroller");
const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
(async () => {
  const seen = new Map();
  let most = 0;
  sc.scrollTop = 0;
  await frame();
  for (;;) {
    const drawn = document.querySelectorAll("#rows .pkt");
    most = Math.max(most, drawn.length);
    for (const p of drawn) {
      if (!seen.has(p.dataset.n)) seen.set(p.dataset.n, {n: Number(p.dataset.n),
        src: p.dataset.src, dst: p.dataset.dst, marks: p.dataset.marks});
    }
    if (sc.scrollTop + sc.clientHeight >= sc.scrollHeight - 1) break;
    sc.scrollTop += Math.max(sc.clientHeight / 2, 36);
    await frame();
  }
  sc.scrollTop = 0;
  done({rows: [...seen.values()], most});
})();
"""


def drawn_rows(driver) -> tuple[list[dict], int]:
    """Every packet row the page draws, in the order drawn (scrolling through all of them), and
    the most rows that were in the DOM at once."""
    driver.set_script_timeout(60)
    got = driver.execute_async_script(_COLLECT)
    return got["rows"], got["most"]


def show_packet(driver, number: int):
    """Scroll until packet `number`'s row is drawn (bisecting: rows are drawn in capture order);
    return that row's element, in view."""
    found = driver.execute_script("""
        const sc = document.getElementById("scroller"), n = arguments[0];
        let lo = 0, hi = sc.scrollHeight;
        for (let k = 0; k < 64; k++) {
          const row = document.getElementById("p" + n);
          if (row) { row.scrollIntoView({block: "center"}); return true; }
          const drawn = [...document.querySelectorAll("#rows .pkt")].map((p) => +p.dataset.n);
          if (!drawn.length) return false;
          if (n < Math.min(...drawn)) hi = sc.scrollTop; else lo = sc.scrollTop;
          const next = Math.floor((lo + hi) / 2);
          if (next === sc.scrollTop) return false;
          sc.scrollTop = next;
          sc.dispatchEvent(new Event("scroll"));
        }
        return false;""", number)
    assert found, f"packet #{number} is never drawn"
    return driver.find_element("id", f"p{number}")


def console_errors(driver) -> list[dict]:
    """The browser console's errors since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def fetched(driver) -> list[str]:
    """Every resource the page loaded after the document itself."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)")


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    return path


def publish(shot: Path, target: Path) -> None:
    """Copy a screenshot into the source tree (the README's picture), atomically, when
    PROTOLAB_UPDATE_PICTURES=1: otherwise every run would rewrite a committed file (its ports
    differ each run); the artifact is saved either way."""
    if os.environ.get("PROTOLAB_UPDATE_PICTURES") != "1":
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    shutil.copyfile(shot, part)
    os.replace(part, target)

