"""report.html is one self-contained page with a figure for each section that has data: training curves,
metrics before and after, the confusion matrix, and the figure of each audit that ran; headless Chromium
renders every figure and the page refers to nothing outside itself."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from fmtool.auditing import audit_loaded
from fmtool.predict import LoadedRun

_AUDITS = {
    "robustness": {"tests": ["uppercase", "add_typo"]},
    "explain": {"steps": 4, "max_examples": 12},
    "fairness": {},
}
_PLOTS = {"curves", "before_after", "confusion", "robustness", "attributions", "fairness"}


@pytest.fixture(scope="module")
def page(classification_run, tmp_path_factory):
    run, _ = classification_run
    out = tmp_path_factory.mktemp("report")
    audit_loaded(LoadedRun.load(run.path), _AUDITS, out)
    return out / "report" / "report.html"


@pytest.mark.slow
def test_every_section_with_data_has_its_figure_and_nothing_is_fetched(page):
    text = page.read_text()
    assert set(re.findall(r'data-plot="(\w+)"', text)) == _PLOTS
    assert text.count("<svg") == len(_PLOTS) - 1  # the attributions are coloured text
    assert "<script" not in text and "<link" not in text and " src=" not in text and not re.search(r"url\((?!#)", text)
    assert not [
        u for u in re.findall(r'(?:href|src)="([^"#]+)"', text) if not u.startswith("data:")
    ]  # inline images only


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
@pytest.mark.slow
def test_headless_chromium_renders_every_figure(page, tmp_path):
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert set(re.findall(r'data-plot="(\w+)"', dom)) == _PLOTS
    assert dom.count("<svg") == len(_PLOTS) - 1
    # the statuses the browser drew are text badges, which need no emoji font
    assert re.search(r'<span class="badge (pass|fail|inconclusive|skip)">', dom)
    assert not re.search("[\u2600-\u27bf\U0001f300-\U0001faff]", dom)
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1200,2000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_statuses_are_text_badges_not_emoji(page):
    text = page.read_text(encoding="utf-8")
    assert re.search(r'<span class="badge (pass|fail|inconclusive|skip)">', text)
    assert not re.search("[\u2600-\u27bf\U0001f300-\U0001faff]", text), "no emoji: servers often lack the font"
    markdown = (page.parent / "report.md").read_text(encoding="utf-8")
    assert re.search(r"\b(PASS|FAIL|INCONCLUSIVE|SKIP)\b", markdown)
    # the provenance says what each family cost, the slowest first
    costs = re.search(r"- audit time: (.+) \(total ([\d.]+) s\)", markdown)
    seconds = [float(s) for s in re.findall(r" ([\d.]+) s", costs.group(1))]
    assert seconds == sorted(seconds, reverse=True) and len(seconds) == len(_AUDITS)


def test_without_a_terminal_the_console_summary_keeps_every_name_whole(classification_run, tmp_path, capfd):
    """CI logs have no TTY: rich's 80-column default cut family and check names to `robustne…`."""
    from fmtool.report.console import print_report

    report = audit_loaded(LoadedRun.load(classification_run[0].path), {"robustness": {}}, tmp_path)
    print_report(report)
    shown = capfd.readouterr().err
    names = [c["name"] for a in report["audits"] for c in a["checks"]]
    assert "…" not in shown and all(name in shown for name in names) and "multiple_perturbations.pass_rate" in names
