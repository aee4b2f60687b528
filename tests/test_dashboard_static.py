"""The live dashboard's static files: present, local-only, and the vendored builds intact.

The dashboard has to work on a wall display with no internet, so every script, style
and map file it loads must come from gateway/static itself. These tests guard that and
the hooks the gateway's browser test relies on; where Node.js is installed they also run
the page's pure helpers (rate derivation, event parsing, de-duplication) under Node.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import gateway

STATIC = Path(gateway.__file__).parent / "static"
VENDOR_JS = {
    "d3-array.min.js": "3.2.5",
    "d3-geo.min.js": "3.1.2",
    "topojson-client.min.js": "3.1.0",
}
EXPECTED = [
    "index.html",
    "dashboard.js",
    "dashboard.css",
    "README.md",
    "vendor/LICENSES.md",
    "vendor/countries-110m.json",
    *(f"vendor/{name}" for name in VENDOR_JS),
]
REMOTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


class _RefCollector(HTMLParser):
    """Collects every src/href attribute value and the ids used in the page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.refs.append((tag, name, value))
            if name == "id" and value is not None:
                self.ids.add(value)


def _page() -> _RefCollector:
    parser = _RefCollector()
    parser.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    parser.close()
    return parser


@pytest.mark.parametrize("relpath", EXPECTED)
def test_file_exists_and_is_not_empty(relpath: str) -> None:
    path = STATIC / relpath
    assert path.is_file(), f"missing {path}"
    assert path.stat().st_size > 0, f"empty {path}"


def test_index_references_only_local_assets_that_exist() -> None:
    page = _page()
    assert page.refs, "index.html references nothing; the parser found no src/href"
    for tag, attr, value in page.refs:
        assert not REMOTE.match(value), f"<{tag} {attr}={value!r}> is not a local asset"
        if value.startswith("data:"):
            continue
        assert ":" not in value.split("/")[0], f"<{tag} {attr}={value!r}> has a scheme"
        target = (STATIC / value.split("?")[0].split("#")[0]).resolve()
        assert target.is_relative_to(STATIC.resolve()), f"{value!r} leaves gateway/static"
        assert target.is_file(), f"<{tag} {attr}={value!r}> points at a missing file"


def test_index_loads_the_vendored_scripts_before_the_dashboard() -> None:
    scripts = [value for tag, attr, value in _page().refs if tag == "script" and attr == "src"]
    assert scripts == [
        "vendor/d3-array.min.js",
        "vendor/d3-geo.min.js",
        "vendor/topojson-client.min.js",
        "dashboard.js",
    ]


def test_css_and_js_fetch_nothing_remote() -> None:
    css = (STATIC / "dashboard.css").read_text(encoding="utf-8")
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", css, re.IGNORECASE)
    assert "@import" not in css
    js = (STATIC / "dashboard.js").read_text(encoding="utf-8")
    assert "https://" not in js
    # The only absolute URL allowed is the SVG namespace, which is a name, not a fetch.
    assert set(re.findall(r"http://[^\s\"'`]+", js)) <= {"http://www.w3.org/2000/svg"}


@pytest.mark.parametrize(("name", "version"), sorted(VENDOR_JS.items()))
def test_vendored_js_is_the_documented_umd_build(name: str, version: str) -> None:
    text = (STATIC / "vendor" / name).read_text(encoding="utf-8")
    assert len(text) > 1000
    first_line = text.splitlines()[0]
    assert f"v{version}" in first_line, f"{name} header says {first_line!r}"
    assert "define.amd" in text, f"{name} is not the UMD build"
    readme = (STATIC / "README.md").read_text(encoding="utf-8")
    assert version in readme, f"README.md does not record {name} {version}"
    assert name in (STATIC / "vendor" / "LICENSES.md").read_text(encoding="utf-8")


def test_world_atlas_is_a_topology_of_countries() -> None:
    world = json.loads((STATIC / "vendor" / "countries-110m.json").read_text(encoding="utf-8"))
    assert world["type"] == "Topology"
    assert len(world["objects"]["countries"]["geometries"]) > 150
    assert world["arcs"]


def test_hooks_for_the_browser_test_are_present() -> None:
    assert "deadletters" in _page().ids
    js = (STATIC / "dashboard.js").read_text(encoding="utf-8")
    for needle in (
        '"signup-marker"',
        "activity-line",
        '"/v1/feeds/signups"',
        '"/v1/feeds/activity"',
        '"/v1/status"',
        'addEventListener("feed"',
    ):
        assert needle in js, f"dashboard.js lacks {needle}"


def test_static_folder_stays_small() -> None:
    total = sum(p.stat().st_size for p in STATIC.rglob("*") if p.is_file())
    assert total < 1_500_000, f"gateway/static is {total} bytes"


_NODE_CHECKS = r"""
const h = require(process.argv[1]);
const out = {};
out.parsed = h.parseCloudEvent('{"id":"a","data":{"name":"Amy"}}');
out.parsedStringData = h.parseCloudEvent('{"id":"a","data":"{\\"line\\":\\"x\\"}"}');
out.notJson = h.parseCloudEvent("nope");
out.notObject = h.parseCloudEvent("[1,2]");
out.nice = [0, 0.4, 1, 1.2, 7, 10, 11, 180].map(h.niceMax);
out.opacity = [0, 60e3, 3600e3].map(h.markerOpacity);
const ids = new h.RecentIds(2);
out.ids = [ids.add("a"), ids.add("a"), ids.add("b"), ids.add("c"), ids.add("a"), ids.add("")];

const t0 = 1_000_000_000_000;
const s = new h.RateTracker(120);
s.addStatusSample(t0, 100);
s.addStatusSample(t0 + 2000, 120);   // 10/s
s.addStatusSample(t0 + 4000, 5);     // counter reset: no interval
s.addStatusSample(t0 + 6000, 25);    // 10/s
s.addArrival(t0 + 5500);             // ignored while status is fresh
out.status = s.series(t0 + 6500);

const a = new h.RateTracker(120);
for (let i = 0; i < 6; i++) a.addArrival(t0 + 1000 + i * 100);  // 6 in second 1
a.addArrival(t0 + 3100);
a.addArrival(t0 + 3200);                                         // and 2 in second 3
const st = a.series(t0 + 4200);
out.stream = {source: st.source, n: st.intervals.length,
              last4: st.intervals.slice(-4).map((i) => i.v), current: st.current};

const stale = new h.RateTracker(120);
stale.addStatusSample(t0, 1);
stale.addStatusSample(t0 + 2000, 3);
out.staleSource = stale.series(t0 + 30000).source;
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_pure_helpers_under_node() -> None:
    node = shutil.which("node")
    assert node is not None
    proc = subprocess.run(
        [node, "-e", _NODE_CHECKS, str(STATIC / "dashboard.js")],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)

    assert out["parsed"]["data"] == {"name": "Amy"}
    assert out["parsedStringData"]["data"] == {"line": "x"}
    assert out["notJson"] is None
    assert out["notObject"] is None
    assert out["nice"] == [1, 1, 1, 2, 10, 10, 20, 200]
    assert out["opacity"][0] == 1
    assert 0.22 < out["opacity"][1] < 1
    assert out["opacity"][2] == pytest.approx(0.22)
    assert out["ids"] == [True, False, True, True, True, True]

    status = out["status"]
    assert status["source"] == "status"
    assert [iv["v"] for iv in status["intervals"]] == [10, 10]
    assert status["current"] == 10

    stream = out["stream"]
    assert stream["source"] == "stream"
    assert stream["n"] == 120
    assert stream["last4"] == [0, 6, 0, 2]
    assert stream["current"] == pytest.approx(8 / 5)
    assert out["staleSource"] == "stream"
