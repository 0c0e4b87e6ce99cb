"""Membership inference: can an attacker tell the run's training examples from examples it never saw?

Members are drawn from the training split, non-members from the held-out splits (validation, test), as many
of each (balanced), seeded; for a language-model run, its training documents against its held-out ones, scored
by their exact token likelihoods (causal LMs). Three attacks score every example, higher meaning "member":

- `loss`: the negative of the model's loss on the example's gold labels (Yeom et al. 2018); NER uses the
  sentence's mean loss over its labelled words, a causal LM the document's mean token loss.
- `min_k`: Min-K% probability (Shi et al. 2024, "Detecting Pretraining Data from Large Language Models"): the
  mean log-probability of the example's min_k_share least likely tokens (NER: words). It needs no reference and
  reads memorisation where the mean hides it; for classification, one unit per example, it equals `loss`.
- `reference`: the loss of a reference model minus the audited model's loss on the same example (Carlini et
  al. 2022, LiRA's offline idea with one reference; Watson et al. 2022). The reference is a twin fine-tuned
  like the run, through AuditContext.finetune, on held-out examples that are then left out of the
  non-members, so it calibrates each example's difficulty without having seen any evaluated example.

Per attack: ROC AUC and the true-positive rate at 1% and 0.1% false-positive rate (ML Privacy Meter's
figures), each with a bootstrap interval, and the ROC points for plots. 0.5 AUC is no leakage.

A blind baseline comes first: a model that never sees the audited one (word and character counts, character 2-4-gram
and word TF-IDF features, logistic regression, 5-fold cross-validated) tells members from non-members as well as the
splits' texts allow. Where its AUC interval lies above 0.5 the splits differ (SST-2's training rows are phrases, its
dev rows sentences; users' splits differ in time and source), and an attack's raw AUC measures that shift, not
memorisation (Das et al. 2024, "Blind Baselines Beat Membership Inference Attacks for Foundation Models"; Duan et al.
2024). Each attack is then judged within strata of the blind score: `<attack>.auc_within_blind_strata` is its AUC over
the member / non-member pairs in the same quantile stratum (5), those the texts alone cannot tell apart, with a
bootstrap interval, against the same threshold; a shift so complete that no stratum holds both kinds leaves it
unmeasured, saying so.

Citations: Shokri et al. 2017; Yeom et al. 2018, "Privacy Risk in Machine Learning"; Carlini et al. 2022,
"Membership Inference Attacks From First Principles"; Murakonda & Shokri 2020, "ML Privacy Meter".
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from fmtool.audit.base import AuditContext, AuditResult, bootstrap_interval, check, register
from fmtool.config.schema import ranged
from fmtool.dataset.examples import Example, words
from fmtool.errors import FmtoolError
from fmtool.task.base import ExampleScore

_KEY = "audit.membership"
_ATTACKS = ("loss", "min_k", "reference")


@dataclass
class MembershipConfig:
    held_out_splits: List[str] = field(default_factory=lambda: ["validation", "test"])
    max_examples: int = ranged(1000, low=1)  # members and non-members each
    min_examples: int = ranged(50, low=1)
    attacks: List[str] = field(default_factory=lambda: list(_ATTACKS))
    min_k_share: float = ranged(0.2, low=0, high=1, low_open=True)  # Min-K%: the share of least likely units read
    # share of the held-out examples the reference twin trains on (they are then not evaluated)
    reference_share: float = ranged(0.5, low=0, high=1, low_open=True, high_open=True)
    max_reference_examples: int = ranged(1000, low=1)
    reference_overrides: List[str] = field(default_factory=list)  # e.g. ["trainer.epochs=1"] for a cheaper twin
    n_boot: int = ranged(200, low=0)
    max_auc: float = ranged(0.6, low=0.5, high=1)
    max_tpr_at_1pct_fpr: Optional[float] = ranged(None, low=0, high=1)  # null: reported, not checked
    # members listed by the reference attack's score: the records the model memorised most
    most_exposed: int = ranged(10, low=0)

    def __post_init__(self) -> None:
        unknown = [a for a in self.attacks if a not in _ATTACKS]
        if unknown:
            raise FmtoolError(f"{_KEY}.attacks: unknown attack '{unknown[0]}'; choose from: {', '.join(_ATTACKS)}")


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """The highest true-positive rate whose false-positive rate is at most `fpr`."""
    false_positive, true_positive, _ = roc_curve(labels, scores)
    return float(true_positive[false_positive <= fpr].max())


def _figures(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "tpr_at_1pct_fpr": tpr_at_fpr(labels, scores, 0.01),
        "tpr_at_0.1pct_fpr": tpr_at_fpr(labels, scores, 0.001),
    }


def _interval(
    labels: np.ndarray, scores: np.ndarray, figure: str, cfg: MembershipConfig, seed: int
) -> tuple[float, float]:
    rows = np.stack([labels, scores], axis=1)

    def statistic(sample: np.ndarray) -> float:
        if len(set(sample[:, 0])) < 2:
            return float("nan")
        return _figures(sample[:, 0], sample[:, 1])[figure]

    return bootstrap_interval(rows, statistic, n_boot=cfg.n_boot, seed=seed)


_FOLDS = 5
# quantile strata of the blind score within which an attack is judged when the splits differ
_STRATA = 5


def _text_features(texts: Sequence[str], vectorisers: Sequence[Any], fit: bool):
    from scipy.sparse import csr_matrix, hstack

    counts = csr_matrix([[math.log1p(len(t.split())), math.log1p(len(t))] for t in texts])
    encoded = [v.fit_transform(texts) if fit else v.transform(texts) for v in vectorisers]
    return hstack([counts, *encoded]).tocsr()


def blind_scores(texts: Sequence[str], labels: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold member scores from the texts alone: word and character counts and TF-IDF character 2-4-grams and
    words, logistic regression, stratified 5-fold cross-validation."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    scores = np.zeros(len(texts))
    folds = min(_FOLDS, int(labels.sum()), int(len(labels) - labels.sum()))
    if folds < 2:
        return scores  # too few to cross-validate: no blind evidence either way
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(texts)), labels):
        vectorisers = (
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True),
            TfidfVectorizer(analyzer="word", min_df=2, sublinear_tf=True, token_pattern=r"\S+"),
        )
        fitted = _text_features([texts[i] for i in train], vectorisers, fit=True)
        model = LogisticRegression(max_iter=2000).fit(fitted, labels[train])
        scores[test] = model.decision_function(_text_features([texts[i] for i in test], vectorisers, fit=False))
    return scores


def stratified_auc(labels: np.ndarray, attack: np.ndarray, blind: np.ndarray, strata: int = _STRATA) -> float:
    """The attack's ROC AUC over the member / non-member pairs whose blind scores fall in the same quantile stratum:
    how well it ranks examples the texts alone cannot tell apart (NaN when no stratum holds both kinds)."""
    edges = np.quantile(blind, np.linspace(0, 1, strata + 1)[1:-1])
    stratum = np.searchsorted(edges, blind, side="right")
    won, pairs = 0.0, 0.0
    for s in np.unique(stratum):
        inside = stratum == s
        members, others = int(labels[inside].sum()), int(inside.sum() - labels[inside].sum())
        if members and others:
            won += roc_auc_score(labels[inside], attack[inside]) * members * others
            pairs += members * others
    return won / pairs if pairs else float("nan")


def _stratified_interval(
    labels: np.ndarray, attack: np.ndarray, blind: np.ndarray, cfg: MembershipConfig, seed: int
) -> tuple[float, float]:
    rows = np.stack([labels, attack, blind], axis=1)
    return bootstrap_interval(
        rows, lambda sample: stratified_auc(sample[:, 0], sample[:, 1], sample[:, 2]), n_boot=cfg.n_boot, seed=seed
    )


def _roc_points(labels: np.ndarray, scores: np.ndarray, attack: str, points: int = 50) -> list[dict[str, Any]]:
    false_positive, true_positive, _ = roc_curve(labels, scores)
    keep = np.unique(np.linspace(0, len(false_positive) - 1, min(points, len(false_positive))).astype(int))
    return [{"attack": attack, "fpr": float(false_positive[i]), "tpr": float(true_positive[i])} for i in keep]


def min_k_scores(scored: Sequence[ExampleScore], share: float) -> np.ndarray:
    """Min-K% probability (Shi et al. 2024): the mean log-probability of each example's `share` least likely units
    (tokens, words; at least one). An unseen text has a few very unlikely tokens; a memorised one has none."""
    scores = []
    for score in scored:
        losses = sorted(score.unit_losses or (score.loss,), reverse=True)
        scores.append(-float(np.mean(losses[: max(1, math.ceil(share * len(losses)))])))
    return np.array(scores)


@register(
    "membership",
    version=2,
    config_type=MembershipConfig,
    description="membership inference: loss, Min-K% and reference-calibrated attacks (AUC, TPR at low FPR)",
    language_models=True,
)
def run(ctx: AuditContext, cfg: MembershipConfig) -> AuditResult:
    if ctx.task.language_model:
        return _language_model_run(ctx, cfg)
    rng = random.Random(f"{ctx.seed}:membership")
    held_out = [e for split in cfg.held_out_splits if split in ctx.available_splits for e in ctx.load_split(split)]
    members_pool = ctx.load_split("train") if "train" in ctx.available_splits else []
    rng.shuffle(held_out)
    use_reference = "reference" in cfg.attacks and ctx.finetune is not None
    warnings = (
        [
            "reference attack skipped: its twin starts where the audited model did, unknown for a model directory "
            "(name it with fmtool audit --base-model)"
        ]
        if "reference" in cfg.attacks and not use_reference
        else []
    )
    cut = int(len(held_out) * cfg.reference_share) if use_reference else 0
    reference_data, non_members = held_out[:cut][: cfg.max_reference_examples], held_out[cut:]
    n = min(len(non_members), len(members_pool), cfg.max_examples)
    if n < cfg.min_examples:
        reason = (
            f"{n} members and non-members each, fewer than min_examples={cfg.min_examples} (train: "
            f"{len(members_pool)}, held out for evaluation: {len(non_members)})"
        )
        return _too_few(n, cfg, [reason, *warnings])
    members, non_members = rng.sample(members_pool, n), non_members[:n]
    examples = [*members, *non_members]
    scored = ctx.score(examples)
    target = np.array([s.loss for s in scored])
    scores = {"loss": -target, "min_k": min_k_scores(scored, cfg.min_k_share)}
    if use_reference:
        twin = ctx.finetune(reference_data, list(cfg.reference_overrides))
        scores["reference"] = np.array([s.loss for s in ctx.score(examples, model=twin)]) - target
    texts = [" ".join(words(e)) for e in examples]
    result = _judged(scores, target, n, cfg, ctx.seed, warnings, texts)
    if use_reference:
        result.tables["most_exposed"] = _most_exposed(members, target[:n], scores["reference"][:n], cfg.most_exposed)
    return result


def _language_model_run(ctx: AuditContext, cfg: MembershipConfig) -> AuditResult:
    """A language model's training documents against its held-out ones, by their exact token likelihoods."""
    members_pool = ctx.load_documents("train")
    held_out = [text for split in cfg.held_out_splits for text in ctx.load_documents(split)]
    n = min(len(members_pool), len(held_out), cfg.max_examples)
    warnings = ["reference attack skipped: a language model's twin would be pre-trained again"] * (
        "reference" in cfg.attacks
    )
    if n < cfg.min_examples:
        reason = (
            f"{n} training and held-out documents each, fewer than min_examples={cfg.min_examples} (a streamed "
            "training corpus is not kept in the run)"
        )
        return _too_few(n, cfg, [reason, *warnings])
    rng = random.Random(f"{ctx.seed}:membership")
    documents = [*rng.sample(members_pool, n), *rng.sample(held_out, n)]
    max_tokens = ctx.config.trainer.max_length if ctx.config is not None else 512
    scored = ctx.task.document_scores(ctx.model, ctx.tokenizer, documents, 16, max_tokens)
    if scored is None:
        return _too_few(n, cfg, [f"a {ctx.task.name} model gives no exact token likelihoods to attack", *warnings])
    target = np.array([s.loss for s in scored])
    return _judged(
        {"loss": -target, "min_k": min_k_scores(scored, cfg.min_k_share)}, target, n, cfg, ctx.seed, warnings, documents
    )


def _too_few(n: int, cfg: MembershipConfig, warnings: list[str]) -> AuditResult:
    checks = [check(f"{a}.auc", None, max_value=cfg.max_auc, n=n) for a in cfg.attacks]
    return AuditResult({"examples": float(n)}, checks, warnings=warnings)


def _judged(
    scores: dict[str, np.ndarray],
    target: np.ndarray,
    n: int,
    cfg: MembershipConfig,
    seed: int,
    warnings: list[str],
    texts: Sequence[str],
) -> AuditResult:
    """Each configured attack's figures and check, for n members followed by n non-members (`texts`); an attack
    without scores is reported as not run. Where the blind baseline tells the splits apart, an attack is judged by
    its AUC within strata of the baseline's score."""
    labels = np.array([1.0] * n + [0.0] * n)
    blind = blind_scores(texts, labels, seed)
    blind_auc, blind_interval = float(roc_auc_score(labels, blind)), _interval(labels, blind, "auc", cfg, seed)
    shifted = blind_interval[0] > 0.5
    summary: dict[str, float] = {
        "examples": float(n),
        "member_mean_loss": float(target[:n].mean()),
        "non_member_mean_loss": float(target[n:].mean()),
        "blind.auc": blind_auc,
    }
    if shifted:
        warnings = [
            *warnings,
            f"the member and non-member splits differ: a blind baseline that never sees the model tells them apart "
            f"with AUC {blind_auc:.3f} [{blind_interval[0]:.3f}, {blind_interval[1]:.3f}]; each attack is judged by "
            "its AUC among examples the baseline scores alike (auc_within_blind_strata), not by its raw AUC",
        ]
    checks = [check(f"{a}.auc", None, max_value=cfg.max_auc, n=2 * n) for a in cfg.attacks if a not in scores]
    rows = [{"attack": "blind baseline (no model)", "auc": blind_auc, "auc_ci": list(blind_interval)}]
    roc = _roc_points(labels, blind, "blind")
    for attack in [a for a in cfg.attacks if a in scores]:
        figures = _figures(labels, scores[attack])
        auc_interval = _interval(labels, scores[attack], "auc", cfg, seed)
        tpr_interval = _interval(labels, scores[attack], "tpr_at_1pct_fpr", cfg, seed)
        summary.update({f"{attack}.{k}": v for k, v in figures.items()})
        rows.append(
            {"attack": attack, **figures, "auc_ci": list(auc_interval), "tpr_at_1pct_fpr_ci": list(tpr_interval)}
        )
        roc += _roc_points(labels, scores[attack], attack)
        if shifted:
            within = stratified_auc(labels, scores[attack], blind)
            if within != within:
                warnings.append(
                    f"{attack}.auc_within_blind_strata not measured: no stratum of the blind score holds both members "
                    "and non-members (the texts alone tell them apart)"
                )
            summary[f"{attack}.auc_within_blind_strata"] = within
            rows[-1]["auc_within_blind_strata"] = within
            checks.append(
                check(
                    f"{attack}.auc_within_blind_strata",
                    within,
                    max_value=cfg.max_auc,
                    interval=_stratified_interval(labels, scores[attack], blind, cfg, seed),
                    n=2 * n,
                    description="ROC AUC among examples the blind baseline scores alike (the splits differ)",
                )
            )
            continue
        checks.append(
            check(
                f"{attack}.auc",
                figures["auc"],
                max_value=cfg.max_auc,
                interval=auc_interval,
                n=2 * n,
                description="ROC AUC of telling members from non-members (0.5: no leakage)",
            )
        )
        if cfg.max_tpr_at_1pct_fpr is not None:
            checks.append(
                check(
                    f"{attack}.tpr_at_1pct_fpr",
                    figures["tpr_at_1pct_fpr"],
                    max_value=cfg.max_tpr_at_1pct_fpr,
                    interval=tpr_interval,
                    n=2 * n,
                    description="members found at 1% false positives",
                )
            )
    return AuditResult(summary, checks, {"attacks": rows, "roc": roc}, warnings=warnings)


def _most_exposed(members: Sequence[Example], loss: np.ndarray, score: np.ndarray, k: int) -> list[dict[str, Any]]:
    """The members whose loss the audited model lowered most below the reference twin's: by id (the text stays in
    the run's data/, as training records may hold personal data)."""
    order = np.argsort(-score, kind="stable")[:k]
    return [
        {
            "id": members[i].id,
            "loss": float(loss[i]),
            "reference_loss": float(loss[i] + score[i]),
            "score": float(score[i]),
        }
        for i in order
    ]
