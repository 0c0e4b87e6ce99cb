"""The run directory: the on-disk contract between training, evaluation, prediction, audits and reports.

    runs/<task>/<timestamp>/
      status.json        running | complete | failed; only 'complete' runs are read by later stages
      config.yaml        the resolved config (Hydra's own record stays in .hydra/)
      env.json           versions, git commit, device, seed, date
      labels.json        the label list in model-output order
      data/<split>.jsonl the exact train / validation / test examples used
      model/             save_pretrained (safetensors) + tokenizer: AutoModelFor...from_pretrained works
      adapter/           with trainer.peft=lora: the LoRA adapters and task head (peft); model/ has them merged
      metrics.jsonl      one line per training log step and per evaluation, flushed as written
      results.json       before/after metrics, training figures
      predictions/<split>.jsonl
      audit/<family>.json each audit family's checks, tables and settings
      audit/<family>.items.json  per-item outcomes of its checks, by stable item id (compare --gate pairs them)
      report/            report.json, report.md, report.html, model_card.md (also model/README.md)
      eval/<name>.json   `fmtool eval` results on other files or splits
      checkpoint/        with trainer.checkpoint_every_steps: the full training state, for fmtool resume
      tensorboard/       with logger=tensorboard: the event files
      mlflow.json        with logger=mlflow: the tracking URI and run id (fmtool resume continues that run)
      train.log          Hydra's job log

A masked-LM run keeps its corpus as data/<split>.txt (one document per line) and data/corpus.json;
a streamed training corpus is recorded by its source only.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fmtool.config.compose import to_typed
from fmtool.config.schema import TrainConfig
from fmtool.dataset.examples import Example, from_record, to_record
from fmtool.errors import FmtoolError, one_line

RUNNING, COMPLETE, FAILED, INTERRUPTED = "running", "complete", "failed", "interrupted"
_NOT_A_RUN = "{0}: not an fmtool run directory (no status.json)"
_INCOMPLETE = "{0}: the run is {1}, not complete; its model and results cannot be trusted (see {0}/train.log)"
_NOT_RESUMABLE = "{0}: the run is already complete; start a new run (model.name={0}/model continues from its weights)"
_MISSING = "{0}: missing from the run directory"
_NO_MODEL = "{0}: missing; was this run made with trainer.save_model=false, or did it not finish?"
_NO_SPLIT = "{0}: the run has no '{1}' split (it has {2})"
_OCCUPIED = (
    "{0}: already holds a run ({1}); pass overwrite=true (or --overwrite) to replace it, or choose another "
    "hydra.run.dir"
)
_LOCKED = "{0}: another fmtool process is writing or auditing this run directory; try again when it has finished"
_FOREIGN_CHECKPOINT = "{0}: the checkpoint belongs to another run ({1}, not {2}); it cannot continue this one"
_CANNOT_RESUME = "{0}: cannot resume: {1}"
_LOCKS: dict[Path, Any] = {}
_PACKAGES = ("fmtool", "torch", "transformers", "hydra-core", "seqeval", "fairlearn", "scikit-learn")


def write_json(path: Path, data: Any) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def write_compact_json(path: Path, data: Any) -> None:
    """write_json without indentation, for machine-read files that would grow several-fold indented."""
    write_lines(path, [json.dumps(data, separators=(",", ":"), default=str)])


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """One line per item, via a temporary file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
    os.replace(partial, path)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    write_lines(path, (json.dumps(record, default=str) for record in records))


def read_json(path: Path) -> Any:
    """A JSON file the run wrote; a damaged one is a one-line error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FmtoolError(f"{path}: damaged, not JSON ({error}); the run directory cannot be trusted") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise FmtoolError(
                        f"{path}:{number}: damaged, not JSON ({error}); the run directory cannot be trusted"
                    ) from None
    return records


def sha256_digests(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """name -> {sha256, bytes} of each file, read in blocks (model weights can be gigabytes)."""
    digests = {}
    for path in sorted(paths):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests[path.name] = {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}
    return digests


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(seed: int, device: str) -> dict[str, Any]:
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": _git_commit(),
        "seed": seed,
        "device": device,
    }


class RunDir:
    """Paths and typed reads/writes of one run directory: the only place its layout is written down.

    `fmtool audit` of a plain model directory writes its audit/ and report/ into a folder laid out the same way.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    status_file = property(lambda self: self.path / "status.json")
    config_file = property(lambda self: self.path / "config.yaml")
    env_file = property(lambda self: self.path / "env.json")
    labels_file = property(lambda self: self.path / "labels.json")
    model_dir = property(lambda self: self.path / "model")
    adapter_dir = property(lambda self: self.path / "adapter")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    results_file = property(lambda self: self.path / "results.json")
    audit_dir = property(lambda self: self.path / "audit")
    report_dir = property(lambda self: self.path / "report")
    checkpoint_dir = property(lambda self: self.path / "checkpoint")
    tokenizer_dir = property(lambda self: self.path / "tokenizer")
    data_dir = property(lambda self: self.path / "data")
    corpus_file = property(lambda self: self.data_dir / "corpus.json")
    predictions_dir = property(lambda self: self.path / "predictions")
    eval_dir = property(lambda self: self.path / "eval")
    tensorboard_dir = property(lambda self: self.path / "tensorboard")
    mlflow_file = property(lambda self: self.path / "mlflow.json")
    partial_model_dir = property(lambda self: self.path / "model.partial")
    report_json = property(lambda self: self.report_dir / "report.json")
    report_markdown = property(lambda self: self.report_dir / "report.md")
    report_html = property(lambda self: self.report_dir / "report.html")
    model_card_file = property(lambda self: self.report_dir / "model_card.md")
    replaced_dir = property(lambda self: self.path / ".replaced")  # overwrite=true: the old run until training starts
    job_file = property(lambda self: self.path / "job.json")  # a sweep job's overrides and refusal (fmtool/sweep.py)

    def split_file(self, split: str) -> Path:
        return self.data_dir / f"{split}.jsonl"

    def documents_file(self, split: str) -> Path:
        return self.data_dir / f"{split}.txt"

    def predictions_file(self, split: str) -> Path:
        return self.predictions_dir / f"{split}.jsonl"

    def audit_file(self, family: str) -> Path:
        return self.audit_dir / f"{family}.json"

    def audit_items_file(self, family: str) -> Path:
        """The per-item outcomes of the family's checks that keep them (fmtool/audit/paired.py pairs them)."""
        return self.audit_dir / f"{family}.items.json"

    def eval_file(self, name: str) -> Path:
        return self.eval_dir / f"{name}.json"

    def is_run(self) -> bool:
        return self.status_file.is_file()

    # writing, in the order training does it

    owner_file = property(lambda self: self.checkpoint_dir / "owner.json")

    def _lock(self) -> None:
        """Hold an exclusive lock on the directory until finish(): a second writer fails at once."""
        handle = open(self.path / ".lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise FmtoolError(_LOCKED.format(self.path)) from None
        _LOCKS[self.path.resolve()] = handle

    def _unlock(self) -> None:
        handle = _LOCKS.pop(self.path.resolve(), None)
        if handle is not None:
            handle.close()

    @contextmanager
    def audit_lock(self) -> Iterator["RunDir"]:
        """The run's lock, held while an audit rewrites audit/ and report/: a second audit (or a training) of the
        same directory is refused at once instead of mixing its files with this one's."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            yield self
        finally:
            self._unlock()

    def publish_audits(self, staging: "RunDir") -> None:
        """Replace audit/ and report/ with staging's: an audit command's files wholly replace the last one's, so
        audit/*.json is always what the report stands behind."""
        for name in (self.audit_dir.name, self.report_dir.name):
            final, fresh, old = self.path / name, staging.path / name, self.path / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                os.replace(final, old)
            os.replace(fresh, final)
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(staging.path, ignore_errors=True)

    def artefacts(self) -> list[Path]:
        """The files and folders of a run already in this directory (Hydra's .hydra/ and train.log, written before
        the run starts, are not among them)."""
        written = (
            self.status_file,
            self.config_file,
            self.env_file,
            self.labels_file,
            self.data_dir,
            self.model_dir,
            self.partial_model_dir,
            self.adapter_dir,
            self.metrics_file,
            self.results_file,
            self.predictions_dir,
            self.checkpoint_dir,
            self.audit_dir,
            self.report_dir,
            self.tokenizer_dir,
            self.eval_dir,
            self.tensorboard_dir,
            self.mlflow_file,
        )
        return [path for path in written if path.exists()]

    def refuse_unless_free(self, overwrite: bool) -> None:
        """Before anything is written into the directory: refuse it when it holds a run (unless `overwrite`), and
        when another process is still writing its run (whatever `overwrite` says). Reads only: a refused command
        leaves every byte of the run as it was."""
        if not overwrite:
            self.refuse_if_occupied()
        lock = self.path / ".lock"
        if not lock.is_file():
            return
        with open(lock, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise FmtoolError(_LOCKED.format(self.path)) from None
            fcntl.flock(handle, fcntl.LOCK_UN)

    def refuse_if_occupied(self) -> None:
        """A one-line error when the directory already holds a run (what `overwrite` would delete)."""
        existing = self.artefacts()
        if existing:
            state = (
                self.status().get("state", "unknown state")
                if self.status_file.is_file()
                else f"{existing[0].name} exists"
            )
            raise FmtoolError(_OCCUPIED.format(self.path, state))

    @classmethod
    def create(cls, path: str | os.PathLike, cfg: TrainConfig) -> "RunDir":
        """A directory for a new run: refused if it holds another run, unless cfg.overwrite clears that run first."""
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        run._lock()
        existing = run.artefacts()
        if not cfg.overwrite:
            try:
                run.refuse_if_occupied()
            except FmtoolError:
                run._unlock()
                raise
        if run.replaced_dir.exists():
            # a replacement stopped before it trained: what stands is that attempt, and .replaced/ the run it replaces
            _remove(existing)
        elif existing:
            run.replaced_dir.mkdir()
            for artefact in existing:
                os.replace(artefact, run.replaced_dir / artefact.name)
        run_id = uuid.uuid4().hex
        write_json(
            run.status_file,
            {
                "state": RUNNING,
                "run_id": run_id,
                "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )
        write_lines(run.config_file, [OmegaConf.to_yaml(OmegaConf.structured(cfg)).rstrip("\n")])
        if cfg.trainer.checkpoint_every_steps:
            write_json(run.owner_file, {"run_id": run_id})
        return run

    @classmethod
    def reopen(cls, path: str | os.PathLike) -> "RunDir":
        """An interrupted or failed run with a checkpoint of its own, marked running again for fmtool resume.

        Every refusal leaves status.json as it was, with the original error.
        """
        from fmtool.trainer.checkpoint import load_checkpoint_path

        run = cls(path)
        if not run.status_file.is_file():
            raise FmtoolError(_NOT_A_RUN.format(run.path))
        status = run.status()
        if status["state"] == COMPLETE:
            raise FmtoolError(_NOT_RESUMABLE.format(run.path))
        try:
            load_checkpoint_path(run.checkpoint_dir)
        except FmtoolError as error:
            earlier = f" (it stopped with: {status['error']})" if status.get("error") else ""
            raise FmtoolError(_CANNOT_RESUME.format(run.path, f"{error}{earlier}")) from None
        owner = read_json(run.owner_file).get("run_id") if run.owner_file.is_file() else None
        if status.get("run_id") and owner != status["run_id"]:
            raise FmtoolError(
                _FOREIGN_CHECKPOINT.format(run.checkpoint_dir, owner or "no owner recorded", status["run_id"])
            )
        run._lock()
        status = {k: v for k, v in status.items() if k not in ("error", "finished")}
        write_json(
            run.status_file,
            {**status, "state": RUNNING, "resumed": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
        )
        return run

    def drop_replaced(self) -> None:
        """Training has started: the run that overwrite=true replaces is deleted now, not before."""
        shutil.rmtree(self.replaced_dir, ignore_errors=True)

    def restore_replaced(self) -> bool:
        """A replacement that failed before training: its files go and the run it would have replaced comes back
        as it was. False when there is nothing to restore."""
        if not self.replaced_dir.is_dir():
            return False
        _remove(self.artefacts())
        for kept in self.replaced_dir.iterdir():
            os.replace(kept, self.path / kept.name)
        self.replaced_dir.rmdir()
        self._unlock()
        return True

    def truncate_metrics(self, after_step: int) -> None:
        """Drop the log lines written after the checkpoint a resumed run restarts from."""
        if self.metrics_file.exists():
            write_jsonl(self.metrics_file, [r for r in read_jsonl(self.metrics_file) if r.get("step", 0) <= after_step])

    def save_environment(self, env: dict[str, Any]) -> None:
        write_json(self.env_file, env)

    def save_labels(self, labels: Sequence[str]) -> None:
        write_json(self.labels_file, list(labels))

    def save_split(self, split: str, examples: Sequence[Example]) -> None:
        write_jsonl(self.split_file(split), (to_record(e) for e in examples))

    def save_documents(self, split: str, documents: Iterable[str]) -> None:
        write_lines(self.documents_file(split), (document.replace("\n", " ") for document in documents))

    def save_tokenizer(self, tokenizer) -> None:
        tokenizer.save_pretrained(self.tokenizer_dir)

    def save_corpus(self, description: dict[str, Any]) -> None:
        write_json(self.corpus_file, description)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    def metrics_writer(
        self, also: Optional[Callable[[dict[str, Any]], None]] = None
    ) -> Callable[[dict[str, Any]], None]:
        """append_metrics, and `also` (a tracker) after each record is on disk."""
        if also is None:
            return self.append_metrics

        def write(record: dict[str, Any]) -> None:
            self.append_metrics(record)
            also(record)

        return write

    def save_adapter(self, model) -> None:
        """A peft model's adapters (and trained head) into adapter/, written whole or not at all."""
        partial = self.path / "adapter.partial"
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        shutil.rmtree(self.adapter_dir, ignore_errors=True)
        os.replace(partial, self.adapter_dir)

    def save_model(self, model, tokenizer) -> None:
        """save_pretrained into model.partial/, then rename: a crash never leaves a half model/."""
        partial = self.partial_model_dir
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        shutil.rmtree(self.model_dir, ignore_errors=True)
        os.replace(partial, self.model_dir)

    def save_predictions(self, split: str, records: Iterable[dict[str, Any]]) -> None:
        write_jsonl(self.predictions_file(split), records)

    def save_results(self, results: dict[str, Any]) -> None:
        write_json(self.results_file, results)

    def finish(self, state: str, error: str | None = None) -> None:
        status = read_json(self.status_file) if self.status_file.exists() else {}
        status.update(state=state, finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        if error:
            status["error"] = error
        write_json(self.status_file, status)
        self._unlock()

    # reading, for eval / predict / audit

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        """A finished run; anything else is a one-line FmtoolError."""
        run = cls(path)
        if not run.status_file.is_file():
            raise FmtoolError(_NOT_A_RUN.format(run.path))
        state = run.status()["state"]
        if state != COMPLETE:
            raise FmtoolError(_INCOMPLETE.format(run.path, state))
        return run

    def status(self) -> dict[str, Any]:
        return read_json(self.status_file)

    def require(self, path: Path) -> Path:
        if not self.status_file.is_file():
            raise FmtoolError(_NOT_A_RUN.format(self.path))
        if not path.exists():
            raise FmtoolError((_NO_MODEL if path == self.model_dir else _MISSING).format(path))
        return path

    def load_config(self) -> TrainConfig:
        """The run's resolved config; a damaged config.yaml is a one-line error naming it."""
        path = self.require(self.config_file)
        try:
            saved = OmegaConf.load(path)
        except Exception as error:  # YAML's scanner and parser errors share no base class with OmegaConf's
            raise FmtoolError(
                f"{path}: damaged, not YAML ({one_line(error)}); the run directory cannot be trusted"
            ) from None
        # every section is written in the schema's order, which adds new ones before the last: a file cut short
        # lacks the last, and the schema's defaults would otherwise fill in what was cut silently
        last = fields(TrainConfig)[-1].name
        if not isinstance(saved, DictConfig) or last not in saved:
            raise FmtoolError(
                f"{path}: damaged, its last section ({last}) missing; the run directory cannot be trusted"
            )
        try:
            return to_typed(saved)
        except (FmtoolError, OmegaConfBaseException) as error:
            raise FmtoolError(f"{path}: damaged ({one_line(error)}); the run directory cannot be trusted") from None

    def load_labels(self) -> list[str]:
        return read_json(self.require(self.labels_file))

    def load_split(self, split: str) -> list[Example]:
        if self.status_file.is_file() and not self.split_file(split).is_file():
            raise FmtoolError(_NO_SPLIT.format(self.path, split, ", ".join(self.splits()) or "none"))
        return [from_record(r) for r in read_jsonl(self.require(self.split_file(split)))]

    def load_results(self) -> dict[str, Any]:
        return read_json(self.require(self.results_file))

    def provenance(self) -> dict[str, Any]:
        """What the run was made of: digests of its model files and data splits, and its environment."""
        return {
            "model_files": sha256_digests(p for p in self.model_dir.glob("*") if p.is_file()),
            "data_files": sha256_digests(p for p in self.data_dir.glob("*") if p.is_file()),
            "environment": read_json(self.env_file) if self.env_file.is_file() else {},
        }

    def splits(self) -> list[str]:
        return sorted(p.stem for p in self.data_dir.glob("*.jsonl"))


class ReplicaRun(RunDir):
    """The run directory as a data-parallel rank other than 0 sees it: it reads, it never writes."""

    def _skip(self, *args: Any, **kwargs: Any) -> None:
        return None

    save_environment = save_labels = save_split = save_documents = save_corpus = save_tokenizer = save_adapter = _skip
    append_metrics = save_model = save_predictions = save_results = finish = truncate_metrics = drop_replaced = _skip

    def restore_replaced(self) -> bool:
        return False
