"""The latent browser in a real browser: headless Chromium (Debian `chromium` + `chromium-driver`, installed by the
fixture when it runs as root with apt-get, like the SLURM test's packages) driven by selenium through pages built
from planted browse data, from `file://` with every host name unresolvable (no network).

Checked: every page loads with no console error; a 100-latent page with 32-token windows loads in under a second
and weighs under 5 MB; search and sort agree with an independent Python reading of the page data; a blind rating
session (answers kept in the browser across a reload, nothing naming an SAE in the DOM or in local storage)
exports a JSON file that `autointerp_human` ingests into Table-1 rows of the human backend. ~15 s once Chromium is
installed (~30 s more for apt-get on a fresh machine). Deselect with `-m "not browser"`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from latent_data import SAES, browse, token_str, tokens

from wsae_utils.autointerp import human_ratings as H
from wsae_utils.autointerp import latent_pages as LP

pytestmark = pytest.mark.browser
PACKAGES = ["chromium", "chromium-driver"]
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LEAKS = ["alpha", "paper", "cap/", "random", "α", "Γ", '"sae"']


def _install_or_skip() -> None:
    """Chromium and its driver from Debian: apt-get them when root and apt are there, else skip saying why."""
    if Path(CHROMIUM).exists() and Path(DRIVER).exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{CHROMIUM} / {DRIVER} missing and no root apt-get to install {PACKAGES}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if proc.returncode != 0:  # stale package lists on a fresh machine
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600, env=env)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if proc.returncode != 0:
        pytest.fail(f"apt-get install {' '.join(PACKAGES)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Pages of two small layers, plus a 100-latent SAE of realistic windows (32 tokens) for the speed check."""
    root = tmp_path_factory.mktemp("browser")
    layers = {2: browse(2, 0), 5: browse(5, 3)}
    scores = {(2, "paper/alpha0"): {int(x): {"intruder": round(0.3 + 0.037 * int(x) % 0.6, 3)} for x in range(20)}}
    LP.write_pages(layers, tokens(0).reshape(-1), token_str, root / "latents", root / "key.json",
                   LP.CardConfig(n_top=4, n_per_band=1), LP.RateConfig(n_cards=8, seed=1), 0.5, scores)
    big = {7: browse(7, 1, n_sample=100, n_lat=120, n_ctx=384, ctx=129, window=32)}
    LP.write_pages(big, tokens(1, 384, 129).reshape(-1), token_str, root / "big", root / "big_key.json",
                   LP.CardConfig(), LP.RateConfig(n_cards=3), 0.5)
    return root, layers


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    _install_or_skip()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1400,1000"):  # no host resolves: offline
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    d.downloads = downloads
    yield d
    d.quit()


def _open(driver, path: Path) -> list[dict]:
    """Load a page from file://; return its console errors."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.as_uri())
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _data(path: Path) -> dict:
    return json.loads(re.search(r'id="data">(.*?)</script>', path.read_text(), re.S).group(1))


def test_every_page_loads_without_console_errors(site, driver):
    root, _ = site
    pages = sorted((root / "latents").rglob("*.html"))
    assert len(pages) == 2 * len(SAES) + 2 + 2
    for page in pages:
        assert _open(driver, page) == [], page
        if page.name != "index.html":  # each data page rendered its cards
            n = driver.execute_script("return document.querySelectorAll('.card, .crow').length")
            assert n > 0, page


def test_hundred_latent_page_loads_under_a_second_and_weighs_under_5_mb(site, driver):
    root, _ = site
    page = root / "big" / LP.page_path(7, "cap/alpha1")
    assert page.stat().st_size < 5 * 2**20
    times = []
    for _ in range(2):  # best of two: the first load also warms the browser's caches
        assert _open(driver, page) == []
        times.append(driver.execute_script(
            "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;"))
    assert driver.execute_script("return document.querySelectorAll('.card').length") == 100
    assert driver.execute_script("return document.querySelectorAll('.card .tok.max').length") >= 100 * 10
    assert min(times) < 1000, times


def _visible_ids(driver, cls: str = "card", attr: str = "data-id") -> list[int]:
    return [int(x) for x in driver.execute_script(
        f"return [...document.querySelectorAll('.{cls}')].filter(e => !e.classList.contains('hidden'))"
        f".map(e => e.getAttribute('{attr}') || e.id.slice(4))")]


def test_search_and_sort_match_the_page_data(site, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    root, _ = site
    page = root / "latents" / LP.page_path(2, "paper/alpha0")
    data = _data(page)
    assert _open(driver, page) == []
    vocab = data["vocab"]

    def hits(card, q):  # what a search for q should find, read independently from the page data
        toks = [vocab[t] for w in card["top"] + [w for b in card["bands"] for w in b["wins"]]
                for t, a in zip(w["t"], w["a"], strict=True) if a > 0]
        return any(q.strip() in s.lower() for s in toks + [u[0] for u in card["logits"]["up"]])

    box = driver.find_element(By.ID, "search")
    shown = {}
    for q in (" w22", " w9", "zzz"):
        box.clear()
        box.send_keys(q)
        want = sorted(c["id"] for c in data["cards"] if hits(c, q))
        shown[q] = _visible_ids(driver)
        assert sorted(shown[q]) == want, q
        assert driver.find_element(By.ID, "count").text.startswith(f"{len(want)} of {len(data['cards'])}")
    assert 18 in shown[" w22"] and len(shown[" w22"]) < len(data["cards"])  # latent 18 fires on token 22 (planted)
    assert shown["zzz"] == []
    box.clear()
    box.send_keys(" ")  # a blank query shows everything again
    box.clear()
    driver.execute_script("document.getElementById('search').dispatchEvent(new Event('input'))")
    assert len(_visible_ids(driver)) == len(data["cards"])
    sort = Select(driver.find_element(By.ID, "sort"))
    sort.select_by_value("id")
    assert _visible_ids(driver) == sorted(c["id"] for c in data["cards"])
    sort.select_by_value("freq")
    assert _visible_ids(driver) == [c["id"] for c in sorted(data["cards"], key=lambda c: (-c["freq"], c["id"]))]
    sort.select_by_value("score:intruder")
    by_score = sorted(data["cards"], key=lambda c: (-c["scores"]["intruder"], c["id"]))
    assert _visible_ids(driver) == [c["id"] for c in by_score]


def test_compare_page_sorts_by_cosine(site, driver):
    from selenium.webdriver.support.ui import Select

    root, _ = site
    page = root / "latents" / "layer2" / "compare.html"
    data = _data(page)
    assert _open(driver, page) == []
    Select(driver.find_element("id", "sort")).select_by_value("cos:2")  # the random-weight SAE's column
    got = [int(x) for x in driver.execute_script(
        "return [...document.querySelectorAll('.crow')].map(e => e.id.slice(4))")]
    want = [r["anchor_latent"] for r in sorted(data["rows"], key=lambda r: (r["cells"][2]["cos"], r["anchor_latent"]))]
    assert got == want
    assert driver.execute_script("return document.querySelectorAll('.badge.match').length") == len(data["rows"])


def test_blind_session_hides_the_sae_and_round_trips_to_the_human_table(site, driver, tmp_path):
    from selenium.webdriver.common.by import By

    from wsae_utils.run.nbrun import execute_notebook

    root, _ = site
    key = json.loads((root / "key.json").read_text())
    page = root / "latents" / "rate.html"
    assert _open(driver, page) == []
    driver.execute_script("localStorage.clear()")
    driver.refresh()
    # A rater who sees one meaning in every α = 1 latent, in every other α = 0 latent and in no random one.
    seen = dict.fromkeys(SAES, 0)

    def plan(sae: str) -> str:
        seen[sae] += 1
        return {"cap/alpha1": "one", "random": "none"}.get(sae, "one" if seen[sae] % 2 else "several")

    cards = driver.find_elements(By.CSS_SELECTOR, ".card")
    assert len(cards) == len(key["cards"])
    driver.find_element(By.ID, "rater").send_keys("tester")
    answers = {}
    for el in cards[:-1]:  # one card left unrated: a partial session is fine
        cid = el.get_attribute("data-card")
        answers[cid] = plan(key["cards"][cid]["sae"])
        el.find_element(By.CSS_SELECTOR, "input.label").send_keys(f"label of {cid}")
        el.find_element(By.CSS_SELECTOR, f"input[value='{answers[cid]}']").click()
    driver.refresh()  # answers are kept in the browser
    assert driver.find_element(By.ID, "progress").text.startswith(f"{len(answers)} of {len(cards)}")
    dom = driver.execute_script("return document.documentElement.outerHTML")
    stored = driver.execute_script("return JSON.stringify(localStorage)")
    for leak in LEAKS:
        assert leak not in dom and leak not in stored, leak
    for t in key["cards"].values():  # no latent id of a rated card appears as one either
        assert f'"latent": {t["latent"]}' not in stored
    driver.find_element(By.ID, "export").click()
    deadline = time.time() + 20
    while not (files := sorted(driver.downloads.glob("ratings-*.json"))) and time.time() < deadline:
        time.sleep(0.2)
    assert files, "no ratings file was downloaded"
    doc = json.loads(files[-1].read_text())
    for leak in LEAKS:
        assert leak not in json.dumps(doc), leak
    assert doc["rater"] == "tester" and doc["key_id"] == key["key_id"]
    assert {r["card"]: r["rating"] for r in doc["ratings"]} == answers
    assert all(r["label"] == f"label of {r['card']}" for r in doc["ratings"])
    # The rule's notebook ingests it: the human rows favour α = 1 with a CI above 0.
    ratings_dir = tmp_path / "ratings"
    ratings_dir.mkdir()
    shutil.copy(files[-1], ratings_dir)
    out = tmp_path / "human"
    execute_notebook("notebooks/autointerp_human.py", out / "report.ipynb",
                     {"out_dir": str(out), "ratings_dir": str(ratings_dir), "rating_key": str(root / "key.json"),
                      "table": str(tmp_path / "human.csv"), "n_boot": 200}, log_path=out / "run.log")
    rows = pd.read_csv(tmp_path / "human.csv")
    m = rows[(rows.layer.astype(str) == "mean") & (rows.alpha == 1.0)].iloc[0]
    assert m.gain_ci_lo > 0 and m.backend == "human" and bool(m.validated)
    back = H.read_ratings([ratings_dir / files[-1].name], key)
    assert len(back) == len(answers) and set(back.sae) == set(SAES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_ratings"] == len(answers) and metrics["claims"][0]["verdict"] == "reproduced"
    assert np.isfinite(metrics["human_gain"])
