"""The audit runner: what the audits of a finished run (or a model directory) read, and how their results become
audit/<family>.json, the report and the model card, replaced wholly under the run's lock."""

from __future__ import annotations

import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import OmegaConf

from fmtool.audit import AuditContext, AuditResult, run_audits
from fmtool.config.schema import AttributionConfig, TrainConfig
from fmtool.dataset.examples import Example
from fmtool.errors import FmtoolError
from fmtool.model.load import LoadPolicy
from fmtool.predict import LoadedRun, SharedPredictions
from fmtool.report.model_card import model_card
from fmtool.report.report import RunCurves, build_report, write_report
from fmtool.runs import RunDir, read_json, read_jsonl, write_compact_json, write_json
from fmtool.task import TASKS, Task
from fmtool.task.base import headline
from fmtool.twins import finetune_model, starting_model


def _no_split(split: str) -> list[Example]:
    raise FmtoolError(f"split '{split}' needs a run directory, or a model directory's --split {split}=FILE")


# config.json fields whose values fix the shapes of the weights a twin or the backdoor scan lines up with the audited
# model's (transformers maps each family's own names onto these: GPT-2's n_embd is hidden_size)
_SHAPE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def _command_policy(loaded: LoadedRun) -> LoadPolicy:
    """What the audit command's own flags allow (loaded.cfg carries them, never the saved config's)."""
    return LoadPolicy(loaded.cfg.model.trust_remote_code, loaded.cfg.model.allow_pickle)


def check_base_model(loaded: LoadedRun, base_model: str) -> dict[str, Any]:
    """Refuse a --base-model that the audited model cannot have been fine-tuned from (another family, shapes or
    vocabulary: its embedding rows and twins would be compared with unrelated ones), before any family runs; what
    the report's provenance names it by otherwise."""
    import hashlib

    from fmtool.model.load import load_config, load_tokenizer

    policy = _command_policy(loaded)
    config = load_config(base_model, policy, key="--base-model")
    audited = loaded.model.config
    differ = [
        f"{field} {getattr(config, field, None)} against {getattr(audited, field, None)}"
        for field in _SHAPE_FIELDS
        if getattr(config, field, None) != getattr(audited, field, None)
    ]
    vocabulary = load_tokenizer(base_model, policy, key="--base-model").get_vocab()
    if vocabulary != loaded.tokenizer.get_vocab():
        differ.append(f"a tokenizer of {len(vocabulary)} tokens against {len(loaded.tokenizer)} (or other tokens)")
    if differ:
        raise FmtoolError(
            f"--base-model {base_model}: the audited model cannot have been fine-tuned from it ({'; '.join(differ)}); "
            "name the model it started from"
        )
    return {"path": str(base_model), "config_sha256": hashlib.sha256(config.to_json_string().encode()).hexdigest()}


def _start(loaded: LoadedRun, base_model: Optional[str]) -> Optional[TrainConfig]:
    """The config twins are trained from: a run's own; a model directory's with --base-model as its model (None
    without one: where it started is unknown)."""
    if loaded.run is not None:
        return loaded.cfg
    return replace(loaded.cfg, model=replace(loaded.cfg.model, name=base_model)) if base_model else None


def audit_context(
    loaded: LoadedRun, splits: Optional[dict[str, list[Example]]] = None, base_model: Optional[str] = None
) -> AuditContext:
    """What the audits of `loaded` read. A run reads its saved splits and trains twins from its own starting point;
    a model directory reads the `splits` given to it, and trains twins only from a `base_model` named for it."""
    run, masked_lm, policy = loaded.run, loaded.task.language_model, _command_policy(loaded)
    start = _start(loaded, base_model)
    if run is not None:
        load_split, available = run.load_split, run.splits()
    else:
        load_split, available = (splits.__getitem__, list(splits)) if splits else (_no_split, [])
    finetune = (
        _no_model
        if masked_lm
        else None
        if start is None
        else partial(finetune_model, start, loaded.labels, policy=policy)
    )
    return AuditContext(
        task=loaded.task,
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
        starting_model=None
        if masked_lm or start is None
        else partial(starting_model, start, loaded.labels, policy=policy),
        # another run (pii's person_model) loads under the audited command's policy, never its own saved config's
        open_run=partial(LoadedRun.load, policy=policy),
        load_documents=partial(_documents, run) if run is not None else lambda split: [],
    )


def _documents(run: RunDir, split: str) -> list[str]:
    """A language-model run's saved documents of `split` (a streamed training corpus is not kept: none)."""
    path = run.documents_file(split)
    return path.read_text(encoding="utf-8-sig").splitlines() if path.is_file() else []


def _no_model(*args: Any, **kwargs: Any) -> Any:
    raise FmtoolError("this audit needs a fine-tuned model with labels, not a language model")


def language_model_context(model_dir: Path, task: Task, policy: LoadPolicy = LoadPolicy()) -> AuditContext:
    """For audits of a plain language-model directory (fmtool audit DIR --task mlm|clm); a directory saved for
    another task, or without a trained language-model head, is refused naming it."""
    from fmtool.config.schema import TrainerConfig
    from fmtool.model.build import load_language_model
    from fmtool.trainer.runtime import resolve_runtime

    runtime = resolve_runtime(TrainerConfig())
    heads = {name: TASKS.get(name).head for name in TASKS}
    model, tokenizer = load_language_model(model_dir, task.name, heads, policy, runtime.device)
    return AuditContext(
        task=task,
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
    ctx: AuditContext,
    audit: dict[str, Any],
    out_dir: Path,
    *,
    run: RunDir | None = None,
    config: dict | None = None,
    base_model: Optional[dict[str, Any]] = None,
    attribution: Optional[Callable[[list[AuditResult]], dict[str, Any]]] = None,
) -> dict[str, Any]:
    """Run the configured audit families and write audit/<family>.json and report/ under out_dir, replacing the
    last audit's wholly; the directory is locked meanwhile. `attribution(results)` adds the report's section on
    where each finding comes from."""
    out = RunDir(out_dir)
    with out.audit_lock():
        staging = RunDir(out.path / ".audit.partial")
        shutil.rmtree(staging.path, ignore_errors=True)
        try:
            report = _audit_into(ctx, audit, out_dir, staging, run, config, base_model, attribution)
        except BaseException:  # a refused or failed audit leaves the last complete audit/ and report/, nothing else
            shutil.rmtree(staging.path, ignore_errors=True)
            raise
        out.publish_audits(staging)
    return report


def _audit_into(
    ctx: AuditContext,
    audit: dict[str, Any],
    out_dir: Path,
    staging: RunDir,
    run: RunDir | None,
    config: dict | None,
    base_model: Optional[dict[str, Any]],
    attribution: Optional[Callable[[list[AuditResult]], dict[str, Any]]],
) -> dict[str, Any]:
    """Every family's audit/<family>.json, the report and the model card, written into `staging`."""
    entries, results_of_families = [], []
    for result, settings in run_audits(ctx, audit):
        results_of_families.append(result)
        items = result.item_outcomes()
        entry = {
            **result.to_dict(),
            "settings": settings,
            "items_file": staging.audit_items_file(result.name).name if items else None,
        }
        if items:
            write_compact_json(staging.audit_items_file(result.name), items)
        write_json(staging.audit_file(result.name), entry)
        entries.append(entry)
    results = run.load_results() if run else {}
    report = build_report(
        path=str(out_dir),
        task=ctx.task.name,
        model=results.get("model", str(ctx.model_dir)),
        dataset=results.get("dataset"),
        config=config or {"audit": audit},
        data=results.get("data", {}),
        metrics={k: {s: headline(m) for s, m in results.get(k, {}).items()} for k in ("before", "after")},
        audits=entries,
        privacy=results.get("train", {}).get("privacy"),
        provenance={**_provenance(ctx, run), **({"base_model": base_model} if base_model else {})},
        attribution=attribution(results_of_families) if attribution else None,
    )
    staging.audit_dir.mkdir(parents=True, exist_ok=True)
    write_report(staging, report, _curves(run, results, config))
    if run is not None:
        write_model_card(staging, run, report, results)
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
    attribution: Optional[AttributionConfig] = None,
) -> dict[str, Any]:
    """Audit `loaded` into out_dir; with attribution.enabled, also where each finding comes from (P and F arms)."""
    config = OmegaConf.to_container(OmegaConf.structured(loaded.cfg))
    base = check_base_model(loaded, base_model) if base_model else None
    attribute_findings = (
        partial(_attribution, loaded, audit, splits, base_model, attribution)
        if attribution is not None and attribution.enabled
        else None
    )
    return audit_pipeline(
        audit_context(loaded, splits, base_model),
        audit,
        out_dir,
        run=loaded.run,
        config=config,
        base_model=base,
        attribution=attribute_findings,
    )


def _attribution(
    loaded: LoadedRun,
    audit: dict[str, Any],
    splits: Optional[dict[str, list[Example]]],
    base_model: Optional[str],
    settings: AttributionConfig,
    results: list[AuditResult],
) -> dict[str, Any]:
    """The attribution section: the twins start where the run started (a model directory: from --base-model) and
    train on its training split; without either, the section says what is missing."""
    from fmtool.attribution import Start, attribute

    if loaded.task.language_model:
        return {"skipped": "attribution compares fine-tuned models with labels against their foundation model"}
    cfg = _start(loaded, base_model)
    if loaded.run is not None:
        train = loaded.run.load_split("train") if "train" in loaded.run.splits() else None
    else:
        train = (splits or {}).get("train")
    if cfg is None or not train:
        missing = " and ".join(
            what for what, absent in (("--base-model", cfg is None), ("--split train=FILE", not train)) if absent
        )
        return {"skipped": f"the probe and seed twins need the model's start and training rows: give {missing}"}
    start = Start(cfg, loaded.labels, train, _command_policy(loaded))

    def context_of(model) -> AuditContext:
        return audit_context(replace(loaded, model=model.to(loaded.runtime.device)), splits, base_model)

    return attribute(results, audit, start, context_of, loaded.model, seeds=settings.seeds, margin=settings.margin)
