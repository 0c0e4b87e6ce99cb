"""The fine-tuning recipe, top to bottom: data -> model -> before -> fit -> after -> run directory;
then audits of a finished run (fmtool/pretrain.py is the masked-LM recipe)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import OmegaConf

from fmtool.audit import AuditContext, run_audits
from fmtool.config.schema import Batching, TaskName, TrainConfig
from fmtool.dataset.batching import InMemoryBatches, collate
from fmtool.dataset.examples import Example
from fmtool.dataset.splits import Splits, check_labels_known, label_list, load_splits
from fmtool.errors import FmtoolError, TrainingStopped, one_line
from fmtool.inference import Runtime
from fmtool.model import build_model, load_tokenizer
from fmtool.model.build import inherited_labels
from fmtool.model.load import LoadPolicy
from fmtool.predict import LoadedRun, SharedPredictions
from fmtool.report.model_card import model_card
from fmtool.report.report import RunCurves, build_report, write_report
from fmtool.runs import COMPLETE, FAILED, INTERRUPTED, RunDir, environment, read_json, read_jsonl, write_json
from fmtool.task import TASKS, Task
from fmtool.task.base import headline
from fmtool.trainer import signals
from fmtool.trainer.checkpoint import checkpoint_step
from fmtool.trainer.distributed import from_env
from fmtool.trainer.embedding import train_seen_rows_only
from fmtool.trainer.loop import Progress, SilentProgress, fit
from fmtool.trainer.setup import finish_training, prepare_model, set_seed, training_figures

log = logging.getLogger(__name__)


def evaluate_split(
    task: Task,
    model,
    examples: Sequence[Example],
    features,
    runtime: Runtime,
    pad_id: int,
    labels: Sequence[str],
    progress: Progress,
    name: str,
) -> tuple[dict[str, Any], list]:
    progress.start(f"evaluate {name}", len(features))
    predictions = task.predict(model, examples, features, runtime, pad_id, progress.advance)
    progress.stop()
    return task.score(examples, predictions, labels), predictions


def _training_labels(cfg: TrainConfig, splits: Splits) -> tuple[list[str], list[str]]:
    """(labels in model-output order, the labels inherited from model.name's fine-tuned head)."""
    inherited = inherited_labels(cfg.model, cfg.task.name)
    seen = label_list(splits.train)
    if not inherited:
        return seen, []
    added = [label for label in seen if label not in inherited]
    if added:
        log.warning(
            "labels extended: %s knows %d labels; the new data adds %s (new output rows start untrained)",
            cfg.model.name,
            len(inherited),
            ", ".join(added),
        )
    return [*inherited, *added], inherited


def fit_features(model, tokenizer, runtime: Runtime, features: Sequence, cfg: TrainConfig, *, evaluate, **loop: Any):
    """Train `model` on encoded training features as cfg says (fit's other options in `loop`), then undo the
    training-only module changes so the model is what saving and loading it gives."""
    if cfg.trainer.dp.enabled:
        from fmtool.trainer.private import fit_private

        return fit_private(
            model,
            features,
            collate=lambda batch: collate(batch, tokenizer.pad_token_id),
            trainer=cfg.trainer,
            optimizer_cfg=cfg.optimizer,
            scheduler_cfg=cfg.scheduler,
            runtime=runtime,
            seed=cfg.seed,
            evaluate=evaluate,
            on_log=loop.get("on_log", lambda record: None),
            progress=loop.get("progress", SilentProgress()),
        )
    if cfg.trainer.skip_unseen_embedding_rows:
        train_seen_rows_only(model, {tokenizer.pad_token_id, *(i for f in features for i in f.input_ids)})
    state = fit(
        model,
        InMemoryBatches(
            features, cfg.trainer.batch_size, seed=cfg.seed, grouped=cfg.trainer.batching == Batching.length_grouped
        ),
        collate=lambda batch, epoch: collate(batch, tokenizer.pad_token_id),
        trainer=cfg.trainer,
        optimizer_cfg=cfg.optimizer,
        scheduler_cfg=cfg.scheduler,
        adversarial=cfg.adversarial,
        runtime=runtime,
        evaluate=evaluate,
        **loop,
    )
    finish_training(model)
    return state


def redact_splits(splits: Splits) -> tuple[Splits, dict[str, dict[str, int]]]:
    """dataset.redact_pii: every split with its personal data replaced by <TYPE>, and the counts replaced per split."""
    from fmtool.dataset.pii import PiiScanner, redact_examples

    scanner, counts, redacted = PiiScanner(), {}, {}
    for name, examples in splits.named().items():
        redacted[name], counts[name] = redact_examples(examples, scanner)
        log.info(
            "redacted %s: %s", name, ", ".join(f"{kind}=<{n}>" for kind, n in counts[name].items()) or "nothing found"
        )
    return Splits(**redacted), counts


def augment_split(splits: Splits, cfg: TrainConfig) -> tuple[Splits, dict[str, int] | None]:
    """dataset.augment: the training split with the edited copies added, and how many each perturbation added."""
    if not cfg.dataset.augment.perturbations:
        return splits, None
    from fmtool.dataset.augment import augment

    train, added = augment(splits.train, cfg.dataset.augment, cfg.seed)
    log.info("augmented train: %s", ", ".join(f"{name}=<+{n}>" for name, n in added.items()))
    return replace(splits, train=train), added


def _saved_splits(run: RunDir) -> Splits:
    named = {name: run.load_split(name) for name in run.splits()}
    return Splits(train=named["train"], validation=named["validation"], test=named.get("test"))


def finetune_pipeline(
    cfg: TrainConfig,
    run: RunDir,
    progress: Progress = SilentProgress(),
    *,
    resume: bool = False,
    on_log: Optional[Callable[[dict[str, Any]], None]] = None,
) -> dict[str, Any]:
    """Fine-tune as `cfg` says and fill `run` with the model, data, metrics and predictions.

    With resume, the data are the splits saved in `run` and training continues from its checkpoint.
    """
    set_seed(cfg.seed)
    dist = from_env()
    task = TASKS.get(cfg.task.name.value)
    if resume:
        splits, labels, started = _saved_splits(run), run.load_labels(), run.load_results()
        inherited, redacted, augmented = started["inherited_labels"], started.get("redacted"), started.get("augmented")
    else:
        splits = load_splits(cfg.dataset)
        splits, redacted = redact_splits(splits) if cfg.dataset.redact_pii else (splits, None)
        splits, augmented = augment_split(splits, cfg)
        labels, inherited = _training_labels(cfg, splits)
    for name, examples in splits.named().items():
        check_labels_known(name, examples, labels)
    log.info(
        "data=<%s> %s labels=<%d>",
        cfg.dataset.name,
        " ".join(f"{k}=<{len(v)}>" for k, v in splits.named().items()),
        len(labels),
    )

    tokenizer = load_tokenizer(cfg.model)
    # a resumed run's head gets its trained rows from the checkpoint
    model = build_model(
        cfg.model,
        cfg.task.name,
        labels,
        vocab_size=len(tokenizer),
        inherited=[] if resume else inherited,
        max_length=cfg.trainer.max_length,
    )
    runtime, trainable = prepare_model(model, cfg)

    run.save_environment(environment(cfg.seed, str(runtime.device)))
    if not resume:
        run.save_labels(labels)
        for name, examples in splits.named().items():
            run.save_split(name, examples)

    label2id = {label: i for i, label in enumerate(labels)}
    features = {
        name: task.encode(examples, tokenizer, label2id, cfg.trainer) for name, examples in splits.named().items()
    }
    evaluated = {name: splits.named()[name] for name in ("validation", "test") if name in features}

    def score(name: str) -> tuple[dict[str, Any], list]:
        return evaluate_split(
            task, model, evaluated[name], features[name], runtime, tokenizer.pad_token_id, labels, progress, name
        )

    if resume:
        before = started["before"]
        run.truncate_metrics(after_step=checkpoint_step(run.checkpoint_dir))
    else:
        before = {name: score(name)[0] for name in evaluated}
        run.save_results(
            {
                "task": task.name,
                "before": before,
                "inherited_labels": inherited,
                "redacted": redacted,
                "augmented": augmented,
            }
        )
    state = fit_features(
        model,
        tokenizer,
        runtime,
        features["train"],
        cfg,
        evaluate=lambda m: score("validation")[0],
        dist=dist,
        checkpoint_dir=run.checkpoint_dir,
        resume=resume,
        on_log=run.metrics_writer(on_log),
        progress=progress,
    )
    after = {}
    for name, examples in evaluated.items():
        after[name], predictions = score(name)
        run.save_predictions(name, (task.record(e, p) for e, p in zip(examples, predictions)))
    if cfg.trainer.save_model:
        run.save_model(model, tokenizer)
    results = {
        "task": task.name,
        "model": cfg.model.name or f"random-init {cfg.model.model_type}",
        "dataset": cfg.dataset.name,
        "labels": labels,
        "inherited_labels": inherited,
        "data": {
            name: {
                "examples": len(splits.named()[name]),
                "features": len(f),
                **({"pii_redacted": sum(redacted[name].values())} if redacted else {}),
            }
            for name, f in features.items()
        },
        "redacted": redacted,
        "augmented": augmented,
        "before": before,
        "after": after,
        "train": training_figures(state, cfg, trainable, dist.world_size),
    }
    run.save_results(results)
    return results


def with_overrides(cfg: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """`cfg` with Hydra-style dotlist overrides (key=value) applied and validated."""
    from fmtool.config.compose import to_typed, with_dotlist
    from fmtool.configure import validate

    return validate(to_typed(with_dotlist(OmegaConf.structured(cfg), overrides, "config")))


def finetune_model(cfg: TrainConfig, labels: Sequence[str], examples: Sequence[Example], overrides: Sequence[str] = ()):
    """A fresh model fine-tuned on `examples` as `cfg` (plus overrides) says, without validation or run directory.

    Audits get this as AuditContext.finetune, to train twins and shadow models without importing the pipeline.
    """
    cfg = with_overrides(cfg, overrides)
    set_seed(cfg.seed)
    task = TASKS.get(cfg.task.name.value)
    tokenizer = load_tokenizer(cfg.model)
    model = build_model(cfg.model, cfg.task.name, list(labels), vocab_size=len(tokenizer), inherited=[])
    runtime, _ = prepare_model(model, cfg)
    features = task.encode(list(examples), tokenizer, {label: i for i, label in enumerate(labels)}, cfg.trainer)
    fit_features(model, tokenizer, runtime, features, cfg, evaluate=None)
    return model.eval()


def _no_split(split: str) -> list[Example]:
    raise FmtoolError(f"split '{split}' needs a run directory, or a model directory's --split {split}=FILE")


def audit_context(
    loaded: LoadedRun, splits: Optional[dict[str, list[Example]]] = None, base_model: Optional[str] = None
) -> AuditContext:
    """What the audits of `loaded` read. A run reads its saved splits and trains twins from its own starting point;
    a model directory reads the `splits` given to it, and trains twins only from a `base_model` named for it."""
    run, masked_lm = loaded.run, loaded.cfg.task.name == TaskName.mlm
    if run is not None:
        load_split, available, start = run.load_split, run.splits(), loaded.cfg
    else:
        load_split, available = (splits.__getitem__, list(splits)) if splits else (_no_split, [])
        start = replace(loaded.cfg, model=replace(loaded.cfg.model, name=base_model)) if base_model else None
    finetune = _no_model if masked_lm else None if start is None else partial(finetune_model, start, loaded.labels)
    return AuditContext(
        task=loaded.cfg.task.name.value,
        labels=loaded.labels,
        predict=_no_model if masked_lm else SharedPredictions(loaded),
        load_split=load_split,
        available_splits=available,
        seed=loaded.cfg.seed,
        model_dir=run.model_dir if run else Path(loaded.cfg.model.name),
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        runtime=loaded.runtime,
        config=loaded.cfg,
        score=_no_model if masked_lm else loaded.scores,
        finetune=finetune,
        # another run (pii's person_model) loads under the audited command's policy, never its own saved config's
        open_run=partial(
            LoadedRun.load, policy=LoadPolicy(loaded.cfg.model.trust_remote_code, loaded.cfg.model.allow_pickle)
        ),
    )


def _no_model(*args: Any, **kwargs: Any) -> Any:
    raise FmtoolError("this audit needs a fine-tuned NER or classification model, not a masked LM")


def masked_lm_context(model_dir: Path, policy: LoadPolicy = LoadPolicy()) -> AuditContext:
    """For audits of a plain masked-LM directory (fmtool audit DIR --task mlm); no model when it has no trained head."""
    from fmtool.config.schema import TrainerConfig
    from fmtool.model.build import load_masked_lm
    from fmtool.trainer.runtime import resolve_runtime

    runtime = resolve_runtime(TrainerConfig())
    loaded = load_masked_lm(model_dir, policy, runtime.device)
    model, tokenizer = loaded if loaded else (None, None)
    return AuditContext(
        task="mlm",
        labels=[],
        predict=_no_model,
        load_split=_no_split,
        available_splits=[],
        model_dir=model_dir,
        model=model,
        tokenizer=tokenizer,
        runtime=runtime,
    )


def audit_pipeline(
    ctx: AuditContext, audit: dict[str, Any], out_dir: Path, *, run: RunDir | None = None, config: dict | None = None
) -> dict[str, Any]:
    """Run the configured audit families and write audit/<family>.json and report/ under out_dir, replacing the
    last audit's wholly; the directory is locked meanwhile."""
    out = RunDir(out_dir)
    with out.audit_lock():
        staging = RunDir(out.path / ".audit.partial")
        shutil.rmtree(staging.path, ignore_errors=True)
        entries = []
        for result, settings in run_audits(ctx, audit):
            entry = {**result.to_dict(), "settings": settings}
            write_json(staging.audit_file(result.name), entry)
            entries.append(entry)
        results = run.load_results() if run else {}
        report = build_report(
            path=str(out_dir),
            task=ctx.task,
            model=results.get("model", str(ctx.model_dir)),
            dataset=results.get("dataset"),
            config=config or {"audit": audit},
            data=results.get("data", {}),
            metrics={k: {s: headline(m) for s, m in results.get(k, {}).items()} for k in ("before", "after")},
            audits=entries,
            privacy=results.get("train", {}).get("privacy"),
            provenance=_provenance(ctx, run),
        )
        staging.audit_dir.mkdir(parents=True, exist_ok=True)
        write_report(staging, report, _curves(run, results, config))
        if run is not None:
            write_model_card(staging, run, report, results)
        out.publish_audits(staging)
    return report


def write_model_card(out: RunDir, run: RunDir, report: dict[str, Any], results: dict[str, Any]) -> None:
    """report/model_card.md, and the same card as model/README.md so it travels with the shared model directory."""
    card = model_card(report, results, read_json(run.env_file) if run.env_file.is_file() else {})
    out.model_card_file.write_text(card, encoding="utf-8")
    if run.model_dir.is_dir():
        (run.model_dir / "README.md").write_text(card, encoding="utf-8")


def _curves(run: RunDir | None, results: dict[str, Any], config: dict | None) -> RunCurves | None:
    """The training records and confusion matrix the HTML report plots (absent for a plain model directory)."""
    if run is None:
        return None
    records = read_jsonl(run.metrics_file) if run.metrics_file.is_file() else []
    details = results.get("after", {}).get("validation", {}).get("details", {})
    metric = ((config or {}).get("trainer") or {}).get("metric")
    return RunCurves(records=records, metric=metric, confusion=details.get("confusion_matrix"))


def _provenance(ctx: AuditContext, run: RunDir | None) -> dict[str, Any]:
    from fmtool.runs import sha256_digests

    loaded = (
        run.provenance()
        if run
        else {
            "model_files": sha256_digests(p for p in Path(ctx.model_dir).glob("*") if p.is_file())
            if ctx.model_dir
            else {}
        }
    )
    model_cfg = ctx.config.model if ctx.config is not None else None
    return {
        **loaded,
        "trust_remote_code": bool(model_cfg and model_cfg.trust_remote_code),
        "allow_pickle": bool(model_cfg and model_cfg.allow_pickle),
    }


def audit_loaded(
    loaded: LoadedRun,
    audit: dict[str, Any],
    out_dir: Path,
    *,
    splits: Optional[dict[str, list[Example]]] = None,
    base_model: Optional[str] = None,
) -> dict[str, Any]:
    config = OmegaConf.to_container(OmegaConf.structured(loaded.cfg))
    return audit_pipeline(audit_context(loaded, splits, base_model), audit, out_dir, run=loaded.run, config=config)


def run_training(
    cfg: TrainConfig,
    run: RunDir,
    progress: Progress = SilentProgress(),
    *,
    resume: bool = False,
    on_log: Optional[Callable[[dict[str, Any]], None]] = None,
) -> dict[str, Any]:
    """The task's training recipe, with the run marked complete only when every file is written; `on_log` also
    receives each metrics.jsonl record (a tracker)."""
    from fmtool.pretrain import pretrain_pipeline

    recipe = pretrain_pipeline if cfg.task.name == TaskName.mlm else finetune_pipeline
    try:
        with signals.stop_between_updates():
            results = recipe(cfg, run, progress, resume=resume, on_log=on_log)
    except BaseException as error:
        interrupted = isinstance(error, TrainingStopped) and error.exit_code > 128
        run.finish(INTERRUPTED if interrupted else FAILED, error=one_line(error) or type(error).__name__)
        raise
    run.finish(COMPLETE)
    return results
