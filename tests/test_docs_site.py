"""The docs site, built and opened in a real browser (headless Debian Chromium, as in
tests/test_browser.py).

`make docs` builds the site (Sphinx, myst-nb, furo; docs/conf.py). Here it is built into a
temporary folder (with the same doctree cache as `make docs`, so only what changed is read
again), served over loopback, and every page is opened:

- it loads (HTTP 200) and its script raises nothing;
- every `<img>` on it has rendered (`naturalWidth > 0`, after loading any lazy one);
- every link to this site resolves: the file is served with 200, and its `#anchor` is an
  element id on the target page;
- every code block of Python or shell is highlighted (Pygments' token spans are there).

A broken link, image or anchor, or a plain code block, fails the test with the page and what
is wrong (`test_the_checks_fail_on_a_broken_page` shows they can). The build itself must give
no warning.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from chromium import launch_chromium, needs_chromium

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    needs_chromium("the docs-site browser test"),
    pytest.mark.timeout(300),
]
pytest.importorskip("playwright.sync_api")
pytest.importorskip("myst_nb", reason="the docs extra is not installed: pip install -e '.[docs]'")

#: What one page shows the checks, read in the page after every image has loaded.
PAGE_FACTS = """async () => {
    await Promise.all(Array.from(document.images).map(img => {
        img.loading = 'eager';
        return img.complete ? null : new Promise(done => { img.onload = img.onerror = done; });
    }));
    const code = 'div[class*="highlight-python"] pre, div[class*="highlight-ipython"] pre, '
               + 'div[class*="highlight-bash"] pre, div[class*="highlight-console"] pre';
    return {
        images: Array.from(document.images).map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth})),
        links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
        ids: Array.from(document.querySelectorAll('[id], a[name]')).map(e => e.id || e.getAttribute('name')),
        code: Array.from(document.querySelectorAll(code)).filter(pre => pre.textContent.trim()).map(pre => ({
            text: pre.textContent.trim().slice(0, 60), spans: pre.querySelectorAll('span[class]').length})),
    };
}"""


REFRESH = re.compile(r'<meta http-equiv="refresh" content="\d+; url=([^"]+)"', re.I)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built from this checkout into a temporary folder."""
    render = subprocess.run([sys.executable, "tools/render_results.py", "--pages-only"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert render.returncode == 0, render.stdout + render.stderr
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "auto", "-c", "docs",
                            "-d", str(ROOT / "docs" / "_build" / "doctrees"), ".", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert build.returncode == 0, build.stderr[-3000:]
    warnings = [line for line in build.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert not warnings, "the docs build warns:\n" + "\n".join(warnings)
    return out


@pytest.fixture(scope="module")
def served(site):
    yield from serve(site)


def serve(folder: Path):
    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as browser:
        yield browser


def pages_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.html"))


def check_site(browser, base: str, pages: list[str]) -> list[str]:
    """Open every page; returns what is wrong, one line each (nothing when all is well)."""
    problems: list[str] = []
    ids: dict[str, set[str]] = {}
    links: dict[str, set[str]] = {}  # link target (with #anchor) -> pages that link to it
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        for name in pages:
            url = urllib.parse.urljoin(base, name)
            with urllib.request.urlopen(url, timeout=10) as answer:
                refresh = REFRESH.search(answer.read().decode("utf-8", "replace"))
            if refresh:  # the site's root: a redirect, checked as a link (a browser would move on)
                links.setdefault(urllib.parse.urljoin(url, refresh.group(1)), set()).add(name)
                ids[url] = set()
                continue
            errors.clear()
            response = page.goto(url, wait_until="load", timeout=30_000)
            if response is None or response.status != 200:
                problems.append(f"{name}: HTTP {response.status if response else 'no response'}")
                continue
            facts = page.evaluate(PAGE_FACTS)
            problems += [f"{name}: script error: {error}" for error in errors]
            ids[url] = set(facts["ids"])
            for image in facts["images"]:
                if not image["width"]:
                    problems.append(f"{name}: image does not render: {image['src']}")
            for block in facts["code"]:
                if not block["spans"]:
                    problems.append(f"{name}: code block not highlighted: {block['text']!r}")
            for link in facts["links"]:
                if link.startswith(base):
                    links.setdefault(link, set()).add(name)
    finally:
        context.close()
    status: dict[str, int] = {}
    for link, sources in sorted(links.items()):
        target, _, anchor = link.partition("#")
        target = target.split("?")[0]
        if target not in ids:  # not a page we opened: a file, a folder, or nothing
            if target not in status:
                try:
                    with urllib.request.urlopen(target, timeout=10) as answer:
                        status[target] = answer.status
                except urllib.error.HTTPError as error:
                    status[target] = error.code
            if status[target] != 200:
                problems.append(f"{', '.join(sorted(sources))}: link to {link[len(base):]} gives HTTP {status[target]}")
                continue
        if anchor and target in ids and urllib.parse.unquote(anchor) not in ids[target]:
            problems.append(f"{', '.join(sorted(sources))}: link to {link[len(base):]}: no such anchor")
    return problems


def test_every_page_loads_with_its_images_links_and_highlighted_code(site, served, browser):
    pages = pages_of(site)
    assert {"index.html", "docs/index.html", "README.html", "docs/design.html", "docs/performance.html",
            "docs/reliability.html", "notebooks/02-asgi-events.html"} <= set(pages)
    assert len(pages) >= 30, pages
    problems = check_site(browser, served, pages)
    assert not problems, f"{len(problems)} problems on {len(pages)} pages:\n" + "\n".join(problems)


def test_the_pages_show_what_they_are_built_from(site):
    """The notebooks' stored pictures, the API from docstrings, results from the JSON files."""
    notebook = (site / "notebooks" / "02-asgi-events.html").read_text(encoding="utf-8")
    assert notebook.count("<img ") >= 3  # its sequence diagrams, from the stored outputs
    api = (site / "docs" / "api" / "asgi.html").read_text(encoding="utf-8")
    assert 'id="asgi_lab.asgi.scope.build_http_scope"' in api
    performance = (site / "docs" / "performance.html").read_text(encoding="utf-8")
    assert "notebooks/data/sse-reference.json" in performance and "<img " in performance
    reliability = (site / "docs" / "reliability.html").read_text(encoding="utf-8")
    assert "benchmarks/results/slow-clients.json" in reliability


def test_the_checks_fail_on_a_broken_page(tmp_path, browser):
    """A hand-made two-page site with one of each fault: every one is reported."""
    (tmp_path / "ok.png").write_bytes((ROOT / "docs" / "images" / "asgi-sequence.png").read_bytes())
    (tmp_path / "a.html").write_text(
        '<html><body><h1 id="top">A</h1><img src="ok.png"><img src="missing.png">'
        '<a href="b.html#there">fine</a><a href="b.html#nowhere">no anchor</a><a href="gone.html">gone</a>'
        '<a href="ok.png">a file</a><a href="https://example.org/">outside</a>'
        '<div class="highlight-python"><pre>print("plain")</pre></div>'
        '<div class="highlight-python"><pre><span class="nb">print</span>()</pre></div></body></html>')
    (tmp_path / "b.html").write_text('<html><body><p id="there">B</p><a href="a.html#top">back</a></body></html>')
    for base in serve(tmp_path):
        problems = check_site(browser, base, ["a.html", "b.html"])
    assert sorted(problems) == sorted([
        f"a.html: image does not render: {base}missing.png",
        "a.html: code block not highlighted: 'print(\"plain\")'",
        "a.html: link to b.html#nowhere: no such anchor",
        "a.html: link to gone.html gives HTTP 404",
    ]), problems
