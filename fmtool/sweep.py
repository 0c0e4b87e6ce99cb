"""Sweeps (`fmtool train -m`): each job succeeds or fails on its own, and the sweep ends with a table of all of them.

A job writes job.json into its own directory (its overrides, and why it was refused or failed); when Hydra has run
every job, SweepTable (a Hydra callback, configs/hydra/default.yaml) reads them back, prints one row per job and
writes the same rows to sweep.json and sweep.md in the sweep directory. CI sweep jobs need exactly this: a bad
value in one job (hydra#2824: no fail-fast) must neither stop the others nor pass unnoticed.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback

from fmtool.runs import RunDir, read_json, write_json

log = logging.getLogger(__name__)

REFUSED = "refused"  # the job's config was refused before its run started
_NOT_RUN = "no record (the job did not start)"


@dataclass
class JobRow:
    job: str
    overrides: str
    state: str
    error: str
    run_dir: str


def record_job(path: str | Path, overrides: list[str], *, error: Optional[str] = None) -> None:
    """What the sweep table needs of one job; a run's own status.json, when it has one, says how it ended."""
    write_json(RunDir(path).job_file, {"overrides": list(overrides), "error": error})


def job_rows(sweep_dir: Path) -> list[JobRow]:
    """One row per job directory of the sweep, in job order; the overrides every job shares are left out."""
    files = sorted(
        sweep_dir.glob(f"*/{RunDir(sweep_dir).job_file.name}"), key=lambda p: (len(p.parent.name), p.parent.name)
    )
    records = [read_json(f) for f in files]
    shared = set.intersection(*(set(r.get("overrides", [])) for r in records)) if len(records) > 1 else set()
    rows = []
    for job_file, record in zip(files, records):
        run = RunDir(job_file.parent)
        status = run.status() if run.is_run() else {}
        state = status.get("state", REFUSED if record.get("error") else _NOT_RUN)
        error = record.get("error") or status.get("error") or ""
        overrides = " ".join(o for o in record.get("overrides", []) if o not in shared)
        rows.append(JobRow(run.path.name, overrides, state, error, str(run.path)))
    return rows


class SweepTable(Callback):
    """At the end of a multirun: the job table on the console and in the sweep directory; `failed` counts the jobs
    that did not complete, for the command's exit code."""

    failed = 0

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from fmtool.report.console import print_sweep
        from fmtool.runs import COMPLETE

        sweep_dir = Path(config.hydra.sweep.dir)
        rows = job_rows(sweep_dir)
        write_json(sweep_dir / "sweep.json", [asdict(row) for row in rows])
        (sweep_dir / "sweep.md").write_text(_markdown(rows), encoding="utf-8")
        print_sweep(rows, sweep_dir)
        SweepTable.failed = sum(row.state != COMPLETE for row in rows)


def _markdown(rows: list[JobRow]) -> str:
    lines = ["| job | overrides | state | error | run directory |", "|---|---|---|---|---|"]
    lines += [f"| {r.job} | {r.overrides} | {r.state} | {r.error.replace('|', '/')} | {r.run_dir} |" for r in rows]
    return "\n".join(lines) + "\n"
