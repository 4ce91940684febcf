"""The HTML report looked at in a real browser: headless Chromium loads every figure, renders every table, and shows
the compact order matrix with cells coloured by verdict and the CI on hover. A screenshot of each page is kept in the
test's tmp_path.

Marked slow (not in the default run, not in CI). Needs Debian's Chromium and its driver, and selenium:

    apt-get install -y chromium chromium-driver
    python -m pip install selenium

Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver, so it never downloads a browser or a driver; the
test skips, saying why, when one of the three is missing. Run it with `python -m pytest -m slow
tests/test_report_browser.py`.
"""

import math
import shutil
from pathlib import Path

import pytest

from sdm_verify import report
from sdm_verify.harness.results import results_from

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,2000")
COMMITTED = Path(__file__).resolve().parent.parent / "reports" / "theory"
#: the verdict colours of page.CSS, as the browser computes them
COLOURS = {"agree": "rgb(205, 236, 205)", "deviates": "rgb(246, 196, 196)", "no-window": "rgb(227, 227, 227)"}


@pytest.fixture
def browser(tmp_path, monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    for exe, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not exe.is_file():
            pytest.skip(f"{exe} is missing (apt-get install -y {package})")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never reach out for a browser or a driver
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _case(solver, target, claimed, errors, family):
    ns = [32, 64, 128, 256]
    rows = [dict(n=n, error=e, nfe=n, metric="W2", floor=1e-14, status="ok" if math.isfinite(e) else "diverged")
            for n, e in zip(ns, errors, strict=True)]
    return dict(solver=solver, target=target, process="ve", schedule="edm", claimed=claimed, family=family), rows


def _small_report(out: Path) -> Path:
    """Three solvers on two targets with synthetic errors C N^-p: one agrees, one deviates, one has no window."""
    pairs = []
    for target in ("gauss-4d", "gmm-8d"):
        pairs.append(_case("heun", target, 2.0, [3.0 * n**-2 for n in (32, 64, 128, 256)], "rk"))
        pairs.append(_case("dpmpp_3m", target, 3.0, [2.0 * n**-2 for n in (32, 64, 128, 256)], "dpm"))
    pairs.append(_case("sdm", "gmm-8d", 2.0, [1e-2, math.inf, 1e-4, 2.5e-5], "other"))
    md, html = report.write_report(None, results_from(pairs), out, {})
    return html


def _look(driver, page: Path, shots: Path) -> dict:
    """Open `page`, open every <details>, and measure what the browser drew; keep screenshots under `shots`."""
    driver.get(page.as_uri())
    driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    seen = driver.execute_script("""
        const imgs = [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                                                     height: i.getBoundingClientRect().height}));
        const tables = [...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().height);
        const m = document.querySelector('table.matrix');
        const cells = m ? [...m.querySelectorAll('td[class]')].map(td => ({
            cls: td.className, title: td.title, text: td.textContent,
            bg: getComputedStyle(td).backgroundColor})) : [];
        return {imgs, tables, cells, matrixWidth: m ? m.getBoundingClientRect().width : 0,
                pageWidth: document.documentElement.clientWidth};
    """)
    matrix = driver.find_element("css selector", "table.matrix")
    driver.execute_script("document.getElementById('order-matrix').scrollIntoView()")
    shots.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(shots / "page.png"))
    assert matrix.screenshot(str(shots / "matrix.png"))
    return seen


def _check(seen: dict) -> None:
    assert seen["imgs"], "no figure on the page"
    broken = [i["src"] for i in seen["imgs"] if not i["ok"] or i["height"] <= 0]
    assert not broken, f"figures that did not load: {broken}"
    assert seen["tables"] and all(h > 0 for h in seen["tables"]), seen["tables"]
    cells = seen["cells"]
    assert cells, "the order matrix has no coloured cell"
    for c in cells:
        assert c["bg"] == COLOURS[c["cls"]], c  # coloured by its verdict
        assert c["title"], c  # the CI and the reason on hover
        if c["cls"] != "no-window":
            assert "[" in c["title"] and c["text"].split()[0] in c["title"], c
    assert seen["matrixWidth"] <= seen["pageWidth"], "the compact matrix is wider than the page"


def test_small_report_renders_in_chromium(browser, tmp_path):
    page = _small_report(tmp_path / "report")
    seen = _look(browser, page, tmp_path / "shots-small")
    _check(seen)
    assert len(seen["imgs"]) == 2  # one convergence figure per target
    assert sorted({c["cls"] for c in seen["cells"]}) == ["agree", "deviates", "no-window"]
    assert sum(c["cls"] == "agree" for c in seen["cells"]) == 2 and sum(c["cls"] == "deviates"
                                                                      for c in seen["cells"]) == 2


def test_committed_report_renders_in_chromium(browser, tmp_path):
    if not (COMMITTED / "index.html").is_file():
        pytest.skip(f"no committed report at {COMMITTED}")
    copy = tmp_path / "theory"  # the page and its figures, without the store
    shutil.copytree(COMMITTED, copy, ignore=shutil.ignore_patterns("*.sqlite"))
    seen = _look(browser, copy / "index.html", tmp_path / "shots-committed")
    _check(seen)
    assert len(seen["imgs"]) == len(list(COMMITTED.glob("*.png")))
