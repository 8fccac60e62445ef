"""The HTML audit report: one self-contained, well-formed page from synthetic audit frames (no Spark)."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from relevance.evaluation.report_html import AuditReport, render_audit_html, write_html_report

SYSTEMS = ("model", "bm25", "zero_shot", "logged_position")
SEGMENTS = ("all", "head", "torso", "tail", "category=furniture", "query_len=1", "query_len=2-3", "query_len=4+")
RANKING = ("ndcg@10", "precision@10", "recall@10", "mrr", "map", "judged@10")
CLASSIFIER = ("roc_auc", "average_precision", "precision", "recall", "f1", "brier", "ece")
MALICIOUS = "<script>alert(1)</script>"
CHART_SECTIONS = ("segments", "pr-curves", "reliability", "score-distributions")
VOID = {"meta", "link", "br", "hr", "img", "input", "col", "area", "base", "wbr", "source", "track", "embed", "param"}


def metrics_frame(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    quality = {"model": 0.72, "bm25": 0.55, "zero_shot": 0.61, "logged_position": 0.58}
    for segment in SEGMENTS:
        for system in SYSTEMS:
            for metric in RANKING:
                value = quality[system] + rng.normal(0, 0.03)
                rows.append({"system": system, "segment": segment, "metric": metric, "k": 10.0, "threshold": np.nan,
                             "value": value, "support": 120, "ci_low": value - 0.04, "ci_high": value + 0.04,
                             "definition": f"{metric}: rank by score desc; unjudged = not relevant"})
        for system in ("model", "zero_shot"):
            for metric in CLASSIFIER:
                value = {"brier": 0.12, "ece": 0.04}.get(metric, 0.8) + (0.05 if system == "zero_shot" else 0.0)
                rows.append({"system": system, "segment": segment, "metric": metric, "k": np.nan, "threshold": 0.5,
                             "value": value, "support": 900, "ci_low": value - 0.02, "ci_high": value + 0.02,
                             "definition": f"{metric} of judged scored pairs at threshold 0.5"})
        rows.append({"system": "model", "segment": segment, "metric": "threshold_for_target_precision", "k": np.nan,
                     "threshold": 0.63, "value": 0.63, "support": 900, "ci_low": np.nan, "ci_high": np.nan,
                     "definition": "lowest threshold whose Wilson 95% lower bound on precision reaches 0.9"})
        for metric in ("irrelevant_impression_share@10", "irrelevant_click_share"):
            rows.append({"system": "model", "segment": segment, "metric": metric, "k": 10.0 if "@" in metric else np.nan,
                         "threshold": 0.5, "value": 0.137, "support": 52_000, "ci_low": 0.121, "ci_high": 0.152,
                         "definition": "impressions on pairs scored below the threshold / all impressions"})
    frame = pd.DataFrame(rows)
    is_headline = (frame.system == "model") & (frame.segment == "all") & (frame.metric == "ndcg@10")
    frame.loc[is_headline, ["value", "ci_low", "ci_high"]] = [0.7351, 0.6952, 0.7749]
    return frame


def delta_rows() -> pd.DataFrame:
    return pd.DataFrame([
        {"system": "model", "segment": segment, "metric": "delta_ndcg@10", "k": 10.0, "threshold": np.nan,
         "value": 0.0213, "support": 80, "ci_low": 0.0071, "ci_high": 0.0355,
         "definition": f"mean per-query ndcg@10 of this model minus v1; p=0.00{i + 1} (paired sign-flip)"}
        for i, segment in enumerate(("all", "head"))])


def pr_frame() -> pd.DataFrame:
    thresholds = np.linspace(0.0, 1.0, 41)
    parts = []
    for system, sharpness in (("model", 3.0), ("zero_shot", 2.0), ("bm25", 1.5)):
        recall = 1 - thresholds ** sharpness
        precision = 0.4 + 0.55 * thresholds ** (1 / sharpness)
        parts.append(pd.DataFrame({"system": system, "threshold": thresholds, "precision": precision, "recall": recall}))
    return pd.concat(parts, ignore_index=True)


def reliability_frame() -> pd.DataFrame:
    bins = np.arange(10)
    parts = [pd.DataFrame({"system": system, "bin": bins, "mean_score": (bins + 0.5) / 10,
                           "observed_rate": np.clip((bins + 0.5) / 10 + offset, 0, 1), "count": 100 + 10 * bins})
             for system, offset in (("model", -0.03), ("zero_shot", 0.08))]
    return pd.concat(parts, ignore_index=True)


def histogram_frame() -> pd.DataFrame:
    edges = np.linspace(0, 1, 21)
    rows = []
    for grade in (0, 1, 2, 3):
        counts = np.histogram(np.random.default_rng(grade).beta(1 + grade, 4 - grade * 0.8, 500), bins=edges)[0]
        rows += [{"system": "model", "grade": grade, "bin_low": lo, "bin_high": hi, "count": int(c)}
                 for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    return pd.DataFrame(rows)


def offenders_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "query_norm": [MALICIOUS, 'sofa "bed" & chair', "oak table"],
        "product_id": ["p-1", "p-2<b>", "p-3"],
        "score": [0.081, 0.122, 0.31],
        "impressions": [12_345, 9_876, 4_321],
        "clicks": [12, 3, 0],
        "mean_position": [1.4, 2.2, 5.0],
        "segment": ["head", "torso", "tail"],
    })


def make_report(**overrides) -> AuditReport:
    fields = {
        "ds": "2025-01-07", "model_version": "cross-encoder-v7", "run_id": "run-42",
        "created_at": "2025-01-08T03:14:15Z",
        "metrics": pd.concat([metrics_frame(np.random.default_rng(0)), delta_rows()], ignore_index=True),
        "pr_curves": pr_frame(), "reliability": reliability_frame(), "score_histograms": histogram_frame(),
        "worst_offenders": offenders_frame(), "threshold": 0.5, "target_precision": 0.9,
        "summary_text": "audit ds=2025-01-07 model=cross-encoder-v7\nndcg@10  0.735 [0.695,0.775]",
    }
    fields.update(overrides)
    return AuditReport(**fields)


class Structure(HTMLParser):
    """Records unbalanced tags and, per <section id>, the tags and text inside it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.counts: dict[str, int] = {}
        self.sections: dict[str, dict] = {}
        self.current: str | None = None

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag == "section":
            self.current = dict(attrs).get("id") or ""
            self.sections[self.current] = {"tags": [], "text": []}
        if self.current:
            self.sections[self.current]["tags"].append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):  # <line ... /> inside SVG: no end tag to wait for
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if self.current:
            self.sections[self.current]["tags"].append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> while open: {self.stack[-3:]}")
            return
        self.stack.pop()
        if tag == "section":
            self.current = None

    def handle_data(self, data):
        if self.current:
            self.sections[self.current]["text"].append(data)

    def text(self, section: str) -> str:
        return "".join(self.sections[section]["text"])

    def tags(self, section: str, name: str) -> list[dict]:
        return [attrs for tag, attrs in self.sections[section]["tags"] if tag == name]


def parse(document: str) -> Structure:
    parser = Structure()
    parser.feed(document)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def page() -> str:
    return render_audit_html(make_report())


@pytest.fixture(scope="module")
def structure(page) -> Structure:
    return parse(page)


def test_the_document_is_well_formed(page, structure):
    assert page.startswith("<!DOCTYPE html>")
    assert structure.problems == []
    assert structure.stack == []
    for tag in ("html", "head", "body", "main", "header", "style"):
        assert structure.counts.get(tag) == 1, tag
    assert re.search(r"<head>.*<title>Relevance audit 2025-01-07 · cross-encoder-v7</title>.*</head>", page, re.S)
    assert set(structure.sections) >= {"systems", *CHART_SECTIONS, "log-only", "worst-offenders", "comparison",
                                       "definitions", "summary"}


def test_every_chart_section_has_an_svg_with_drawn_data(structure):
    for section in CHART_SECTIONS:
        assert len(structure.tags(section, "svg")) == 1, section
    assert len(structure.tags("segments", "rect")) >= len(SEGMENTS) * len(SYSTEMS)  # bars (+ legend swatches)
    assert len(structure.tags("pr-curves", "polyline")) == 3  # model, zero_shot, bm25
    assert len(structure.tags("reliability", "circle")) == 20  # 10 bins x 2 systems
    assert len(structure.tags("score-distributions", "polygon")) == 4  # one outline per grade


def test_the_page_is_self_contained(page):
    lowered = page.lower()
    for reference in ("http://", "https://", "<script", "<link", "@import", "url(", "src="):
        assert reference not in lowered, reference


def test_user_text_is_escaped(page, structure):
    assert MALICIOUS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "p-2<b>" not in page and "p-2&lt;b&gt;" in page
    assert "sofa &#34;bed&#34; &amp; chair" in page  # markupsafe's form of &quot;
    assert MALICIOUS in structure.text("worst-offenders")  # shown to the reader as text
    assert structure.counts.get("b", 0) == 0


def test_escapes_text_inside_the_charts():
    metrics = metrics_frame(np.random.default_rng(1))
    metrics.loc[metrics.segment == "category=furniture", "segment"] = "category=<i>x</i>"
    page = render_audit_html(make_report(metrics=metrics))
    structure = parse(page)
    assert structure.problems == [] and structure.counts.get("i", 0) == 0
    assert "category=<i>x</i>" in structure.text("segments")


def test_input_numbers_appear(page, structure):
    systems = structure.text("systems")
    assert "0.735 [0.695, 0.775]" in systems  # model ndcg@10 on segment all, with its CI
    assert "cross-encoder-v7" in page and "run-42" in page and "2025-01-08T03:14:15Z" in page
    assert "0.5000" in page  # decision threshold in the header
    assert "12,345" in structure.text("worst-offenders")
    assert "0.137" in structure.text("log-only") and "52,000" in structure.text("log-only")
    assert "0.021" in structure.text("comparison") and "p=0.001" in structure.text("comparison")
    assert "ndcg@10  0.735 [0.695,0.775]" in structure.text("summary")


def test_best_system_per_row_is_highlighted(page):
    def best_cells(metric: str) -> list[str]:
        found = re.search(rf"<tr><td[^>]*>{re.escape(metric)}</td>(.*?)</tr>", page)
        assert found, metric
        row = found.group(1)
        return re.findall(r'<td class="num best"[^>]*>([^<]*)', row)

    assert best_cells("ndcg@10") == ["0.735 "]  # model, the highest
    assert best_cells("brier") == ["0.120 "]  # model, the lowest: lower is better
    assert best_cells("judged@10") == []  # coverage has no better direction


def test_threshold_marker_and_target_line(structure):
    text = structure.text("pr-curves")
    assert "target precision 0.900" in text
    assert "threshold 0.500" in text
    assert any("stroke-dasharray" in attrs for attrs in structure.tags("pr-curves", "line"))


def test_missing_values_are_shown_as_dashes():
    metrics = metrics_frame(np.random.default_rng(2))
    is_f1 = (metrics.segment == "all") & (metrics.metric == "f1") & (metrics.system == "model")
    metrics.loc[is_f1, ["value", "ci_low", "ci_high"]] = np.nan
    page = render_audit_html(make_report(metrics=metrics))
    found = re.search(r"<tr><td[^>]*>f1</td>(.*?)</tr>", page)
    assert found
    row = found.group(1)
    assert re.search(r"<td class=\"num\"[^>]*>–</td>", row)
    assert "nan" not in parse(page).text("systems").lower()


@pytest.mark.parametrize("empty", [pd.DataFrame(), pd.DataFrame(columns=["system", "threshold", "precision", "recall"])])
def test_renders_without_curves_reliability_or_histograms(empty):
    report = make_report(pr_curves=empty, reliability=empty, score_histograms=empty,
                         worst_offenders=empty, metrics=metrics_frame(np.random.default_rng(3)))
    structure = parse(render_audit_html(report))
    assert structure.problems == [] and structure.stack == []
    for section in ("pr-curves", "reliability", "score-distributions", "worst-offenders"):
        assert "no data" in structure.text(section), section
        assert structure.tags(section, "svg") == []
    assert len(structure.tags("segments", "svg")) == 1
    assert "comparison" not in structure.sections  # no delta_ rows


def test_renders_with_no_metrics_at_all():
    report = make_report(metrics=pd.DataFrame(), pr_curves=pd.DataFrame(), reliability=pd.DataFrame(),
                         score_histograms=pd.DataFrame(), worst_offenders=pd.DataFrame(), summary_text="")
    structure = parse(render_audit_html(report))
    assert structure.problems == [] and structure.stack == []
    for section in ("systems", "segments", "log-only", "definitions"):
        assert "no data" in structure.text(section), section


def test_definitions_list_every_metric(structure):
    text = structure.text("definitions")
    metrics = make_report().metrics.metric.unique()
    for metric in metrics:
        assert metric in text, metric
    assert len(structure.tags("definitions", "details")) == 1
    assert len(structure.tags("definitions", "dt")) == len(metrics)


def test_script_and_ampersand_are_escaped_wherever_data_text_goes():
    """Query, product, segment (table cells, SVG text and hover titles), definitions (title attributes),
    model version (<title>, <h1>) and the summary all come from data: none may open a tag."""
    payload = f"{MALICIOUS} & co"
    metrics = metrics_frame(np.random.default_rng(4))
    metrics.loc[metrics.segment == "category=furniture", "segment"] = f"category={payload}"
    metrics.loc[metrics.metric == "f1", "definition"] = payload
    offenders = offenders_frame().assign(query_norm=[payload, "oak & ash", "x"], product_id=[payload, "p&2", "p-3"])
    page = render_audit_html(make_report(metrics=metrics, worst_offenders=offenders, model_version=payload,
                                         summary_text=payload))
    structure = parse(page)
    assert "<script" not in page.lower() and structure.counts.get("script", 0) == 0
    assert structure.problems == [] and structure.stack == []
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"
    assert page.count(escaped) >= 8
    assert "oak &amp; ash" in page and "p&amp;2" in page and " & " not in page.split("</style>")[1]
    assert re.search(rf'<td title="{re.escape(escaped)}">f1</td>', page)  # the definition as hover text
    assert f"<title>Relevance audit 2025-01-07 · {escaped}</title>" in page
    for section in ("worst-offenders", "segments", "definitions", "summary"):
        assert payload in structure.text(section), section  # the reader sees the text itself


def test_the_stylesheet_file_is_inlined(page):
    css = resources.files("relevance.evaluation").joinpath("templates/report.css").read_text(encoding="utf-8")
    assert "td.best" in css
    found = re.search(r"<style>(.*?)</style>", page, re.DOTALL)
    assert found
    style = found.group(1)
    assert style.strip() == css.strip()


def test_rendering_is_pure():
    """The page depends on the report alone, and rendering leaves the report's frames as they were."""
    report = make_report()
    before = {name: getattr(report, name).copy() for name in ("metrics", "pr_curves", "reliability",
                                                              "score_histograms", "worst_offenders")}
    first = render_audit_html(report)
    assert render_audit_html(report) == first == render_audit_html(make_report())
    for name, frame in before.items():
        pd.testing.assert_frame_equal(getattr(report, name), frame, obj=name)


def test_renders_when_jobs_is_imported_from_a_zip(tmp_path):
    """spark-submit --py-files: the package and its templates come from a zip (zipimport)."""
    root = Path(__file__).resolve().parents[1]
    archive = tmp_path / "relevance.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in ["relevance/__init__.py", "relevance/evaluation/__init__.py", "relevance/evaluation/report_html.py",
                     "relevance/evaluation/report_format.py", "relevance/evaluation/svg_charts.py", *(p.relative_to(root).as_posix()
                                                                  for p in (root / "relevance/evaluation/templates").iterdir())]:
            z.write(root / path, path)
    code = ("import sys, zipimport, pandas as pd; from relevance.evaluation import report_html as r; "
            "assert isinstance(r.__loader__, zipimport.zipimporter), r.__loader__; e = pd.DataFrame(); "
            "sys.stdout.write(r.render_audit_html(r.AuditReport('d', 'v<1>', 'id', 't', e, e, e, e, e, 0.5, 0.9, 's')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(archive)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<!DOCTYPE html>") and "v&lt;1&gt;" in done.stdout and "td.best" in done.stdout


def test_write_html_report(tmp_path):
    path = write_html_report(str(tmp_path), "2025-01-07", "<!DOCTYPE html><p>ok</p>")
    assert path == str(tmp_path / "reports" / "audit_2025-01-07.html")
    assert (tmp_path / "reports" / "audit_2025-01-07.html").read_text(encoding="utf-8") == "<!DOCTYPE html><p>ok</p>"


def test_write_html_report_skips_remote_warehouses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert write_html_report("s3://bucket/warehouse", "2025-01-07", "<p>x</p>") is None
    assert list(tmp_path.rglob("*")) == []
