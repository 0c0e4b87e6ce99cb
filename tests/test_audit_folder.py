"""audit/ and the report agree: an audit command replaces the last one's files wholly, and holds the run's lock
while it writes, so a second audit of the same run is refused instead of mixing its files in."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fmtool.cli import main
from fmtool.runs import RunDir
from tests.conftest import REPO


def _families(run: RunDir) -> tuple[list[str], list[str]]:
    files = sorted(p.stem for p in run.audit_dir.glob("*.json"))
    reported = sorted(a["name"] for a in json.loads(run.report_json.read_text())["audits"])
    return files, reported


@pytest.mark.slow
def test_a_second_audit_replaces_the_first_ones_files(ner_run, tmp_path):
    copy = RunDir(tmp_path / "run")
    shutil.copytree(ner_run[0].path, copy.path)
    assert main(["audit", str(copy.path), "audit=[calibration,data]"]) == 0
    assert _families(copy) == (["calibration", "data"], ["calibration", "data"])
    assert main(["audit", str(copy.path), "audit=[bias]"]) == 0
    assert _families(copy) == (["bias"], ["bias"])
    assert not any(p.name.startswith(".audit") or p.name.endswith(".old") for p in copy.path.iterdir())


def test_an_audit_of_a_run_another_process_holds_is_refused_and_changes_nothing(ner_run, tmp_path, capsys):
    copy = RunDir(tmp_path / "run")
    shutil.copytree(ner_run[0].path, copy.path)
    assert main(["audit", str(copy.path), "audit=[calibration]"]) == 0
    before = {p: p.read_bytes() for p in copy.path.rglob("*") if p.is_file()}
    copy._lock()
    try:
        assert main(["audit", str(copy.path), "audit=[bias]"]) == 2
    finally:
        copy._unlock()
    assert "another fmtool process is writing or auditing this run directory" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in copy.path.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_two_audits_started_together_end_with_a_consistent_report(ner_run, tmp_path):
    copy = RunDir(tmp_path / "run")
    shutil.copytree(ner_run[0].path, copy.path)
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "fmtool", "audit", str(copy.path), f"audit=[{family}]"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for family in ("calibration", "data")
    ]
    outcomes = [(process.wait(timeout=600), process.stderr.read()) for process in started]
    assert {code for code, _ in outcomes} <= {0, 2} and any(code == 0 for code, _ in outcomes), outcomes
    assert all("another fmtool process" in err for code, err in outcomes if code == 2)
    files, reported = _families(copy)
    assert files == reported and len(files) == 1
