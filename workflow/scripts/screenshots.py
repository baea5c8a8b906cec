"""Screenshots and layout checks of the results pages in headless Chromium, as a reader's 1400 × 900 screen sees them.

    .venv/bin/python workflow/scripts/screenshots.py results --out results/screenshots [--pages index.html]

For `results/index.html` and every `results/**/report.html`: a PNG of the first screen (`chromium --headless
--screenshot`), and, from the laid-out page (`--dump-dom` on a copy that measures itself after load): whether the
page is wider than the window (a table or figure past its edge), and on the index whether every claim row, with its
verdict badge and key number, ends within the first screen. Writes `layout.json` and prints one line per page;
exits 1 when a check fails. Needs Debian's `chromium` (`apt-get install chromium`); nothing is fetched from the
network (pages are opened from disk, with `--no-proxy-server`).
"""

from __future__ import annotations

import argparse
import html as html_mod
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH, HEIGHT = 1400, 900
_MEASURE = """<script>
window.addEventListener('load', () => {
  const doc = document.documentElement;
  const out = {scrollWidth: doc.scrollWidth, innerWidth: window.innerWidth, rows: []};
  for (const tr of document.querySelectorAll('tr[data-claim]')) {
    const r = tr.getBoundingClientRect();
    out.rows.push({claim: tr.dataset.claim, bottom: r.bottom,
                   badge: !!tr.querySelector('.badge'), key: (tr.querySelector('.key') || {}).textContent || ''});
  }
  const wide = [];
  for (const t of document.querySelectorAll('table')) {
    const r = t.getBoundingClientRect();
    let p = t.parentElement, scrolls = false;
    while (p) { const s = getComputedStyle(p); if (['auto', 'scroll'].includes(s.overflowX)) { scrolls = true; break; }
                p = p.parentElement; }
    if (r.right > window.innerWidth + 1 && !scrolls) wide.push(Math.round(r.right));
  }
  out.wideTables = wide;
  const pre = document.createElement('pre'); pre.id = 'wsae-layout'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    """Path of the Chromium binary (Debian names it chromium)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no chromium found: apt-get install chromium")


def _run(args: list[str], timeout: int = 120) -> str:
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-proxy-server",
            "--allow-file-access-from-files", f"--window-size={WIDTH},{HEIGHT}", "--virtual-time-budget=5000"]
    proc = subprocess.run(base + args, capture_output=True, text=True, timeout=timeout)
    return proc.stdout


def screenshot(page: Path, png: Path) -> None:
    """The first screen of `page` as a PNG."""
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={png}", page.resolve().as_uri()])


def measure(page: Path) -> dict:
    """Layout of `page` at 1400 × 900: page width, claim rows' bottoms, tables past the edge without a scroller."""
    text = page.read_text(encoding="utf-8")
    base = f"<base href='{html_mod.escape(page.resolve().parent.as_uri())}/'>"
    text = re.sub(r"<head[^>]*>", lambda m: m.group(0) + base, text, count=1) if "<head" in text else base + text
    text = text.replace("</body>", _MEASURE + "</body>") if "</body>" in text else text + _MEASURE
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(text, encoding="utf-8")
        dom = _run(["--dump-dom", copy.as_uri()])
    found = re.search(r"<pre id=\"wsae-layout\">(.*?)</pre>", dom, re.S)
    if not found:
        return {"error": "page did not report its layout"}
    return json.loads(html_mod.unescape(found.group(1)))


def check(results: Path, out: Path, patterns: tuple[str, ...] = ("index.html", "**/report.html")) -> list[str]:
    """Screenshot and check the pages under `results` matching `patterns`; return the failures."""
    pages = [p for pat in patterns for p in (sorted(results.glob(pat)) or [results / pat])]
    failures, facts = [], {}
    for page in pages:
        if not page.is_file():
            failures.append(f"{page}: missing")
            continue
        rel = page.relative_to(results)
        screenshot(page, out / (str(rel.with_suffix("")).replace("/", "__") + ".png"))
        m = measure(page)
        facts[str(rel)] = m
        problems = []
        if "error" in m:
            problems.append(m["error"])
        else:
            if m["scrollWidth"] > m["innerWidth"] + 1:
                problems.append(f"page is {m['scrollWidth']} px wide in a {m['innerWidth']} px window")
            if m["wideTables"]:
                problems.append(f"{len(m['wideTables'])} table(s) run past the edge without a scroller")
            if page.name == "index.html":
                if not m["rows"]:
                    problems.append("no claim rows")
                for r in m["rows"]:
                    if r["bottom"] > HEIGHT:
                        problems.append(f"claim {r['claim']} ends at {r['bottom']:.0f} px, below the first screen")
                    if not r["badge"] or not r["key"].strip():
                        problems.append(f"claim {r['claim']} lacks a verdict badge or key number")
        print(f"{rel}: {'ok' if not problems else '; '.join(problems)}")
        failures += [f"{rel}: {p}" for p in problems]
    out.mkdir(parents=True, exist_ok=True)
    (out / "layout.json").write_text(json.dumps(facts, indent=1))
    return failures


def main(argv: list[str] | None = None) -> int:
    """Command line: results folder, output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", default=Path("results"))
    parser.add_argument("--out", type=Path, default=None, help="where the PNGs and layout.json go "
                        "(default: <results>/screenshots)")
    parser.add_argument("--pages", nargs="+", default=["index.html", "**/report.html"],
                        help="glob patterns under the results folder (default: the index and every report)")
    args = parser.parse_args(argv)
    failures = check(args.results, args.out or args.results / "screenshots", tuple(args.pages))
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
