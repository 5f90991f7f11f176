"""``build_report`` / ``ntkbayes report``: the static page links only files that exist, and nothing external."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from fake_store import DATASETS, METHODS

from ntkbayes.errors import UserError
from ntkbayes.report.html import _figure_html, build_report


class _Links(HTMLParser):
    """Collects every src/href and the tags seen."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.links.append((tag, name, value))

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    return parser


def _check_links(page: Path) -> _Links:
    parsed = _parse(page)
    assert parsed.links, "the report links nothing"
    for tag, attr, value in parsed.links:
        url = urlparse(value)
        assert not url.scheme and not url.netloc, f"external asset <{tag} {attr}={value!r}>"
        if value.startswith("#"):
            continue  # in-page anchor; checked below
        target = (page.parent / unquote(url.path)).resolve()
        assert target.is_file(), f"<{tag} {attr}={value!r}> points at a missing file {target}"
    ids = set()
    text = page.read_text(encoding="utf-8")
    for _, _, value in parsed.links:
        if value.startswith("#"):
            ids.add(value[1:])
    for anchor in ids:
        assert f'id="{anchor}"' in text, f"anchor #{anchor} has no target"
    assert "script" not in parsed.tags and "link" not in parsed.tags  # no scripts, no external style sheets
    return parsed


def test_every_linked_table_and_figure_exists(report_store):
    root, page = report_store
    assert page == root / "report.html"
    parsed = _check_links(page)
    imgs = [v for tag, attr, v in parsed.links if tag == "img"]
    hrefs = [v for tag, attr, v in parsed.links if tag == "a" and not v.startswith("#")]
    names = {Path(v).name for v in imgs}
    for dataset, (_, _, ood_sets, planar) in DATASETS.items():
        assert f"reliability_{dataset}.png" in names
        assert f"risk_coverage_{dataset}.png" in names
        assert f"compare_{dataset}_test.png" in names
        for ood in ood_sets:
            assert f"ood_hist_{dataset}_{ood}.png" in names
        assert (f"uncertainty_map_{dataset}_confidence.png" in names) == planar
        assert (f"uncertainty_map_{dataset}_mi.png" in names) == planar
    assert all(v.startswith("figures/") for v in imgs)  # relative links, no embedded data
    linked_tables = {v for v in hrefs if v.endswith(".csv")}
    for dataset in DATASETS:
        on_disk = {p.relative_to(root).as_posix() for p in (root / "compare" / dataset).glob("*.csv")}
        assert on_disk and on_disk <= linked_tables
    assert "compare/summary.md" in hrefs


def test_page_content(report_store):
    root, page = report_store
    parsed = _parse(page)
    text = " ".join(parsed.text)
    html_text = page.read_text(encoding="utf-8")
    assert 'class="ntkbayes-leaderboard"' in html_text  # the leaderboard module's HTML export
    for label, _, _ in METHODS:
        assert label in text
    for key in ("abc123", "fake CPU", "ece_bins", "How close are NTK ensembles", "Failed cells", "boom"):
        assert key in text, key
    assert "★" in text
    assert page.stat().st_size < 500_000  # images are linked, not embedded


def test_report_elsewhere_links_relative_to_the_page(report_store, tmp_path):
    root, _ = report_store
    before = {p: p.stat().st_mtime_ns for p in (root / "figures").glob("*.png")}
    page = build_report(root, tmp_path / "site" / "deep" / "index.html")
    assert page.parent == tmp_path / "site" / "deep"
    parsed = _check_links(page)
    assert any(v.endswith("results/figures/reliability_moons.png") and v.startswith("../")
               for _, _, v in parsed.links)
    # figures newer than the records are reused, not redrawn
    assert {p: p.stat().st_mtime_ns for p in (root / "figures").glob("*.png")} == before
    assert build_report(root) == root / "report.html"
    assert {p: p.stat().st_mtime_ns for p in (root / "figures").glob("*.png")} == before
    _check_links(root / "report.html")


def test_figure_links_pdf_when_present(tmp_path):
    png = tmp_path / "figures" / "x.png"
    png.parent.mkdir()
    png.write_bytes(b"png")
    assert "<a href" not in _figure_html("cap", png, tmp_path)
    png.with_suffix(".pdf").write_bytes(b"pdf")
    snippet = _figure_html("a <b> caption", png, tmp_path)
    assert 'href="figures/x.pdf"' in snippet and 'src="figures/x.png"' in snippet
    assert "a &lt;b&gt; caption" in snippet


def test_report_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a results directory"):
        build_report(tmp_path / "nothing")
    os.makedirs(tmp_path / "empty")
    (tmp_path / "empty" / "records.jsonl").write_text("")
    with pytest.raises(UserError, match="no 'ok' records"):
        build_report(tmp_path / "empty")
