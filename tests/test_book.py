"""End to end: every section under the smoke profile, the cache on a rerun, the HTML book, and
the rendered pages in headless Chromium. Slow (a few minutes), marked ``book``."""
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from softlib.book import runner as book

REPO = Path(book.__file__).resolve().parents[2]
pytestmark = pytest.mark.book


def _runner(args, env):
    return subprocess.run([sys.executable, "-m", "softlib.book", *args], cwd=REPO, env=env,
                          text=True, capture_output=True)


def _snapshot(root: Path, pattern: str = "*") -> dict[str, float]:
    """Modification times of the files under ``root`` matching ``pattern``."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob(pattern)
            if p.is_file()}


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    root = tmp_path_factory.mktemp("book")  # never the repository's own executed book
    repo_book = _snapshot(REPO / "book")
    env = {**os.environ, "SOFTLIB_CACHE": str(cache), "SOFTLIB_QUIET": "1",
           "SOFTLIB_BOOK_DIR": str(root)}
    first = _runner(["run", "--profile", "smoke"], env)
    assert first.returncode == 0, first.stdout + first.stderr
    snap = _snapshot(cache, "meta.json")
    second = _runner(["all", "--profile", "smoke"], env)  # run again (cache hits), then build
    assert second.returncode == 0, second.stdout[-5000:] + second.stderr[-5000:]
    return {"cache": cache, "snapshot": snap, "after": _snapshot(cache, "meta.json"), "root": root,
            "html": root / "_build" / "html", "repo_book_before": repo_book,
            "repo_book_after": _snapshot(REPO / "book"), "first": first, "second": second}


def test_every_section_was_executed_under_smoke(smoke_book):
    sections = smoke_book["root"] / "book" / "sections"
    timings = json.loads((sections / "timings.json").read_text())
    for section, nb in book.SECTIONS.items():
        assert (sections / (Path(nb).stem + ".ipynb")).exists()
        assert timings[section]["profile"] == "smoke"


def _section_lines(stdout: str, phase: str) -> dict[str, str]:
    """The ``[i/n] section ...`` lines of one phase (compute / execute) of the runner's stdout."""
    lines = stdout.split(f"\n{phase}:\n", 1)[1].splitlines()
    out = {}
    for line in lines:
        m = re.match(r"^\[\d+/\d+\] (\S+)\s+(.*)$", line)
        if not m:
            break
        out[m.group(1)] = m.group(2)
    return out


def test_the_runner_reports_every_section_and_ends_with_a_summary(smoke_book):
    first, second = smoke_book["first"].stdout, smoke_book["second"].stdout
    computed = ("generalisation", "alternatives", "adversarial", "calibration_ood", "compute")
    for out, fresh in ((first, True), (second, False)):
        compute, execute = _section_lines(out, "compute"), _section_lines(out, "execute")
        assert list(compute) == list(book.SECTIONS) == list(execute), out
        for s in computed:  # jobs done / total, trained, cache hits, time
            word = "benchmarked" if s == "compute" else "trained"  # this machine's benchmark
            m = re.search(rf"complete\s+(\d+)/(\d+) jobs \| {word} (\d+) \| cache hits (\d+) \| "
                          r"[\d.]+ s", compute[s])
            assert m, compute[s]
            done, total, trained, hits = map(int, m.groups())
            assert done == total == trained + hits > 0, compute[s]
            assert (trained > 0) if fresh else (trained == 0), compute[s]
        for s in set(book.SECTIONS) - set(computed):
            assert "nothing to compute" in compute[s]
        assert all(re.match(r"executed in [\d.]+ s$", v) for v in execute.values()), execute
    # the summary: every section with its times and counts, then where the HTML is
    tail = second.split("\nsummary (profile smoke", 1)[1].splitlines()
    for s in book.SECTIONS:
        assert any(line.split()[:1] == [s] for line in tail), s
    assert tail[-1] == f"HTML: {smoke_book['html'] / 'index.html'}"
    assert "executed notebooks:" in first.split("\nsummary (profile smoke", 1)[1]
    # no kernel chatter on the terminal
    for res in (smoke_book["first"], smoke_book["second"]):
        assert "without encryption" not in res.stdout + res.stderr


def test_the_test_book_leaves_the_repositorys_book_alone(smoke_book):
    assert smoke_book["repo_book_after"] == smoke_book["repo_book_before"]


def test_rerun_reuses_the_cache(smoke_book):
    assert smoke_book["snapshot"], "the smoke run cached no results at all"
    assert smoke_book["after"] == smoke_book["snapshot"], "a rerun recomputed cached results"


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.title, self.imgs, self._in_title, self.text = "", 0, False, []

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        if tag == "img" and "_images/" in dict(attrs).get("src", ""):
            self.imgs += 1

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        self.text.append(data)


def _pages(html: Path) -> list[Path]:
    return [html / "book" / "sections" / (Path(nb).stem + ".html") for nb in book.SECTIONS.values()]


def test_book_has_every_section_with_figures_and_no_traceback(smoke_book):
    html = smoke_book["html"]
    assert (html / "index.html").exists()
    for page in _pages(html):
        assert page.exists(), page
        p = _Page()
        p.feed(page.read_text())
        text = " ".join(p.text)
        assert p.title.strip(), page
        assert p.imgs >= 1, f"{page.name}: no rendered figure"
        assert "Traceback (most recent call last)" not in text, page.name
        assert "SMOKE PROFILE" in text, f"{page.name}: the smoke warning box is missing"
        if page.stem[:2] in ("02", "03", "04", "05"):   # the discussion reads the data root
            assert "The images are a synthetic fixture, not CIFAR-10" in text, page.name


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _chromium_or_skip() -> str:
    """The chromium executable; skips the test without one, unless SOFTLIB_REQUIRE_CHROMIUM."""
    exe = _chromium()
    if exe is None:
        if os.environ.get("SOFTLIB_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required (SOFTLIB_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("chromium not installed")
    return exe


def test_pages_render_in_headless_chromium(smoke_book, tmp_path):
    exe = _chromium_or_skip()
    html = smoke_book["html"]
    shots = REPO / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    # jupyter-book writes index.html as a redirect to the root page: open where it leads
    target = re.search(r'url=([^"]+)"', (html / "index.html").read_text())
    landing = (html / target.group(1)).resolve() if target else html / "index.html"
    assert landing.exists(), f"index.html redirects to a missing page: {landing}"
    for page in [landing, *_pages(html)]:
        url = page.as_uri()
        dom = subprocess.run([exe, *flags, "--dump-dom", url], text=True, capture_output=True,
                             timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        p = _Page()
        p.feed(dom.stdout)
        assert p.title.strip(), f"{page.name}: no title after rendering"
        assert "Traceback (most recent call last)" not in " ".join(p.text), page.name
        if page != landing:
            assert p.imgs >= 1, f"{page.name}: no figure in the rendered DOM"
        shot = shots / (page.stem + ".png")
        subprocess.run([exe, *flags, f"--screenshot={shot}", "--window-size=1280,1600", url],
                       capture_output=True, timeout=120)
        assert shot.exists() and shot.stat().st_size > 10_000, f"{page.name}: no screenshot"


class _Ledger(HTMLParser):
    """The claims ledger's rows (``<tr data-claim=...>``) and the text of their verdict cells."""

    def __init__(self):
        super().__init__()
        self.rows, self.verdicts, self._in = [], [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-claim" in a:
            self.rows.append(a["data-claim"])
        if tag == "td" and "verdict" in (a.get("class") or "").split():
            self._in = True
            self.verdicts.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in = False

    def handle_data(self, data):
        if self._in:
            self.verdicts[-1] += data


def _check_ledger(text: str) -> None:
    from softlib.book import claims
    p = _Ledger()
    p.feed(text)
    assert p.rows == [c.id for c in claims.CLAIMS], "the ledger lacks or repeats a claim's row"
    assert len(p.verdicts) == len(p.rows), "a ledger row has no verdict cell"
    assert all(v.strip() in claims.VERDICTS for v in p.verdicts), p.verdicts


def test_claims_ledger_has_one_row_and_verdict_per_claim(smoke_book):
    page = smoke_book["html"] / "book" / "sections" / (Path(book.SECTIONS["claims"]).stem + ".html")
    _check_ledger(page.read_text())


def test_claims_ledger_in_headless_chromium(smoke_book, tmp_path):
    exe = _chromium_or_skip()
    page = smoke_book["html"] / "book" / "sections" / (Path(book.SECTIONS["claims"]).stem + ".html")
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", f"--user-data-dir={tmp_path / 'p'}",
                          "--dump-dom", page.as_uri()], text=True, capture_output=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    _check_ledger(dom.stdout)
