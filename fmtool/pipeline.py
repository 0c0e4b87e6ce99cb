"""The fine-tuning recipe, top to bottom: data -> model -> before -> fit -> after -> run directory
(fmtool/pretrain.py is the masked-LM recipe, fmtool/auditing.py runs the audits of a finished run)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable, Optional, Sequence

from fmtool.config.schema import TrainConfig
from fmtool.dataset.examples import Example
from fmtool.dataset.splits import Splits, check_labels_known, label_list, load_splits
from fmtool.errors import TrainingStopped, one_line
from fmtool.inference import Runtime
from fmtool.model import build_model, load_tokenizer
from fmtool.model.build import inherited_labels, special_token_ids
from fmtool.runs import COMPLETE, FAILED, INTERRUPTED, RunDir, environment
from fmtool.task import TASKS, Task
from fmtool.trainer import signals
from fmtool.trainer.checkpoint import checkpoint_step
from fmtool.trainer.distributed import from_env
from fmtool.trainer.loop import Progress, SilentProgress
from fmtool.trainer.lora import is_adapted, merged
from fmtool.trainer.setup import fit_features, prepare_model, set_seed, training_figures, with_adapters

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
    inherited = inherited_labels(cfg.model, TASKS.get(cfg.task.name).head)
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
    task = TASKS.get(cfg.task.name)
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
        task.head,
        labels,
        vocab_size=len(tokenizer),
        inherited=[] if resume else inherited,
        max_length=cfg.trainer.max_length,
        token_ids=special_token_ids(tokenizer),
    )
    model = with_adapters(model, cfg, task.peft_task_type)
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

    def score(name: str, scored=model) -> tuple[dict[str, Any], list]:
        return evaluate_split(
            task, scored, evaluated[name], features[name], runtime, tokenizer.pad_token_id, labels, progress, name
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
    run.drop_replaced()
    state = fit_features(
        model,
        tokenizer,
        runtime,
        features["train"],
        cfg,
        evaluate=lambda trained: score("validation", trained)[0],
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
        if is_adapted(model):
            run.save_adapter(model)
        run.save_model(merged(model), tokenizer)
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

    recipe = pretrain_pipeline if TASKS.get(cfg.task.name).language_model else finetune_pipeline
    try:
        with signals.stop_between_updates():
            results = recipe(cfg, run, progress, resume=resume, on_log=on_log)
    except BaseException as error:
        if run.restore_replaced():
            log.warning("%s: the run it holds was kept; the one replacing it stopped before training", run.path)
            raise
        interrupted = isinstance(error, TrainingStopped) and error.exit_code > 128
        run.finish(INTERRUPTED if interrupted else FAILED, error=one_line(error) or type(error).__name__)
        raise
    run.finish(COMPLETE)
    return results
