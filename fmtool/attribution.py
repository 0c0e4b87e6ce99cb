"""Where each finding comes from: the same audits on the fine-tuned model and on what its foundation model brings,
on the same probe items, compared check by check with paired statistics (fmtool audit --attribute).

Arms, each audited by the families whose checks keep per-item outcomes (audit/<family>.items.json):
- F: the audited model, plus seeds-1 twins fine-tuned with its recipe on its training split under other seeds;
- P: probe twins: the foundation model frozen and only the task head trained, with the same recipe, training split
  and seeds (Kumar et al. 2022's linear probe: what the foundation model's features already carry). A LoRA run's
  foundation model is its base without adapters: the probe twins train no adapter.

Per check, Δ = mean over F's seeds − mean over P's seeds on the shared items, its interval and p-value by the paired
(multi-)bootstrap of fmtool/audit/paired.py (exact McNemar for one seed and 0/1 outcomes), Holm-adjusted across the
report's checks, and the verdict by paired.VERDICT_RULES. With one seed the claim is about this model, not about
its recipe: seed variation is not in the interval (Baldini et al. 2022 find fairness moves with the seed).

Families that score text without a task head (stereotype, canary, membership of a language model) would compare
the foundation model with its own language-model head (arm B); they keep no item outcomes yet, so the report lists
them as not attributed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from fmtool.audit import AuditContext, AuditResult, run_audits
from fmtool.audit.paired import VERDICT_RULES, paired_differences, verdict
from fmtool.config.schema import TrainConfig
from fmtool.dataset.examples import Example
from fmtool.model.load import LoadPolicy
from fmtool.twins import finetune_model

log = logging.getLogger(__name__)

# what turns the run's recipe into a probe twin's: the foundation model frozen, only the head trained
PROBE_OVERRIDES = ("trainer.peft=none", "trainer.freeze=all_but_head")


@dataclass(frozen=True)
class Start:
    """What the twins are trained from: the run's config (its starting model, recipe, seed), labels and training
    rows, loaded under the audit command's policy."""

    cfg: TrainConfig
    labels: list[str]
    train: list[Example]
    policy: LoadPolicy


def _items(results: Sequence[AuditResult]) -> dict[str, dict[str, Any]]:
    """'family.check' -> (its per-item outcomes, threshold, direction) for the checks that keep items."""
    kept = {}
    for result in results:
        for check in result.checks:
            if check.items is not None:
                kept[f"{result.name}.{check.name}"] = {
                    "items": check.items.to_dict(),
                    "threshold": check.threshold,
                    "direction": check.direction,
                }
    return kept


def _quality(ctx: AuditContext) -> Optional[float]:
    """The model's headline validation figure (a probe twin that learned nothing passes every invariance check)."""
    if "validation" not in ctx.available_splits:
        return None
    examples = ctx.load_split("validation")
    return float(ctx.task.primary_score(examples, ctx.predict(examples)))


def _twin(
    start: Start, overrides: Sequence[str], audit: dict[str, Any], context_of: Callable[[Any], AuditContext]
) -> tuple[dict[str, dict[str, Any]], Optional[float]]:
    """A twin's kept item outcomes and its validation figure."""
    model = finetune_model(start.cfg, start.labels, start.train, list(overrides), policy=start.policy)
    ctx = context_of(model)
    return _items([result for result, _ in run_audits(ctx, audit)]), _quality(ctx)


def attribute(
    own: Sequence[AuditResult],
    audit: dict[str, Any],
    start: Start,
    context_of: Callable[[Any], AuditContext],
    audited: Any,
    *,
    seeds: int,
    margin: float,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The report's attribution section: per check that keeps item outcomes, P's and F's values on the shared
    items, Δ with its interval, raw and Holm-adjusted p, the verdict, the seeds and the item count. `own` are the
    audited model's (`audited`) results; `context_of(model)` audits a model on the same probes."""
    kept = _items(own)
    families = {name: audit[name] for name in audit if any(check.startswith(f"{name}.") for check in kept)}
    skipped = {name: "keeps no per-item outcomes" for name in audit if name not in families}
    if not families:
        return {"seeds": seeds, "checks": [], "not_attributed": skipped, "rules": VERDICT_RULES, "margin": margin}
    fine_tuned, probed, quality = [kept], [], {"P": [], "F": [_quality(context_of(audited))]}
    for offset in range(seeds):
        seed = [f"seed={start.cfg.seed + offset}"]
        log.info("attribution: probe twin %d of %d (frozen foundation model, head only)", offset + 1, seeds)
        items, figure = _twin(start, [*PROBE_OVERRIDES, *seed], families, context_of)
        probed.append(items)
        quality["P"].append(figure)
        if offset:
            log.info("attribution: seed twin %d of %d (the run's recipe)", offset, seeds - 1)
            items, figure = _twin(start, seed, families, context_of)
            fine_tuned.append(items)
            quality["F"].append(figure)
    found = paired_differences(
        {
            name: tuple([replicate[name]["items"] for replicate in arm] for arm in (probed, fine_tuned))
            for name in kept
            if all(name in replicate for arm in (probed, fine_tuned) for replicate in arm)
        },
        seed=start.cfg.seed,
    )
    rows = []
    for name, difference in found.items():
        threshold, direction = kept[name]["threshold"], kept[name]["direction"]
        rows.append(
            {
                **difference.to_dict(),
                "threshold": threshold,
                "direction": direction,
                "verdict": verdict(difference, threshold, direction, margin, alpha),
            }
        )
    return {
        "seeds": seeds,
        "margin": margin,
        "alpha": alpha,
        "claim": (
            "about this model: one seed per arm, so seed variation is not in the intervals"
            if seeds == 1
            else f"about the recipe: {seeds} seeds per arm, resampled with the items"
        ),
        "arms": {
            "P": "the foundation model frozen, the task head trained (" + ", ".join(PROBE_OVERRIDES) + ")",
            "F": "the audited model" + (f" and {seeds - 1} seed twins" if seeds > 1 else ""),
        },
        "checks": rows,
        # each replicate's headline validation figure: a probe twin that learned nothing passes invariance checks
        "quality": quality,
        "not_attributed": skipped,
        "rules": VERDICT_RULES,
    }
