"""Use a finished run's model: evaluate it on examples, or label raw text.

NER output gives each entity's type, text, character offsets in the input and a score (the mean of
its words' top-label probabilities); classification gives the label and every label's probability.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from fmtool.config.schema import Precision, TrainConfig
from fmtool.dataset.examples import Example, TokenExample
from fmtool.dataset.splits import to_model_labels
from fmtool.errors import FmtoolError
from fmtool.inference import Runtime
from fmtool.model.load import LoadPolicy
from fmtool.runs import RunDir
from fmtool.task import TASKS, Task
from fmtool.task.base import ExampleScore
from fmtool.trainer.runtime import resolve_runtime

_LANGUAGE_MODEL = (
    "a {0} run is a language model and labels nothing: fmtool predict RUN_DIR TEXT shows its output; fine-tune it "
    "(fmtool train +task=ner model.name=RUN_DIR/model) to label text"
)


def input_keys(examples: Sequence[Example], tokenizer) -> list[tuple]:
    """Per example, what the model reads of it: its text after the tokenizer's normalizer (the step before
    splitting into tokens, e.g. BERT's lowercasing, accent stripping and control-character removal).

    Equal keys give equal token ids; text holding an added token (such as [MASK]), which the tokenizer matches
    before normalizing, is keyed as written.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    added = [token.content for token in getattr(tokenizer, "added_tokens_decoder", {}).values()]

    def key(text: Optional[str]) -> Optional[str]:
        if text is None or normalizer is None or any(token in text for token in added):
            return text
        return normalizer.normalize_str(text)

    return [
        ("words", *map(key, e.tokens)) if isinstance(e, TokenExample) else ("text", key(e.text), key(e.text_pair))
        for e in examples
    ]


def distinct_inputs(examples: Sequence[Example], tokenizer) -> tuple[list[Example], list[int]]:
    """The examples with distinct input_keys, and for each example the index of its twin among them."""
    seen: dict[tuple, int] = {}
    distinct: list[Example] = []
    position = []
    for example, identity in zip(examples, input_keys(examples, tokenizer)):
        if identity not in seen:
            seen[identity] = len(distinct)
            distinct.append(example)
        position.append(seen[identity])
    return distinct, position


@dataclass
class LoadedRun:
    run: Optional[RunDir]
    cfg: TrainConfig
    task: Task
    model: Any
    tokenizer: Any
    labels: list[str]
    runtime: Runtime

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        policy: LoadPolicy = LoadPolicy(),
        batch_size: Optional[int] = None,
        precision: Optional[Precision] = None,
    ) -> "LoadedRun":
        """A finished run's model, config and data; batch_size and precision default to the run's. Whether the
        model's own code may run, or its pickles load, is `policy`'s to say, never the saved config's."""
        run = RunDir.open(path)
        return cls._with_model(run, run.load_config(), run.require(run.model_dir), policy, batch_size, precision)

    @classmethod
    def from_model_dir(
        cls,
        path: str | Path,
        task: str,
        *,
        policy: LoadPolicy = LoadPolicy(),
        batch_size: Optional[int] = None,
        precision: Optional[Precision] = None,
    ) -> "LoadedRun":
        """A plain Hugging Face model directory (save_pretrained output) for `task`, with no run around it."""
        if not (Path(path) / "config.json").is_file():
            raise FmtoolError(
                f"{path}: neither an fmtool run directory (status.json) nor a model directory (config.json)"
            )
        from fmtool.config.compose import to_typed
        from fmtool.configure import compose_train_config

        # the task's defaults, as `fmtool train +task=...` would use them: a twin trained for an audit follows them
        composed = compose_train_config([f"+task={task}"])
        composed.model.name = str(path)
        cfg = to_typed(composed)
        return cls._with_model(None, cfg, Path(path), policy, batch_size, precision)

    @classmethod
    def _with_model(
        cls,
        run: Optional[RunDir],
        cfg: TrainConfig,
        model_dir: Path,
        policy: LoadPolicy,
        batch_size: Optional[int],
        precision: Optional[Precision],
    ) -> "LoadedRun":
        from fmtool.model.build import RECEIVED_FIX, check_trained_head, check_vocabulary
        from fmtool.model.load import load_pretrained, load_tokenizer

        # twins and shadow models built from this config follow the caller's policy too
        cfg = replace(
            cfg, model=replace(cfg.model, trust_remote_code=policy.trust_remote_code, allow_pickle=policy.allow_pickle)
        )
        # a run trained on a GPU box may be evaluated on a laptop
        device = "auto" if cfg.trainer.device.startswith("cuda") else cfg.trainer.device
        runtime = resolve_runtime(
            replace(
                cfg.trainer,
                device=device,
                eval_batch_size=batch_size or cfg.trainer.eval_batch_size,
                precision=precision or cfg.trainer.precision,
            )
        )
        tokenizer = load_tokenizer(model_dir, policy, key=str(model_dir))
        task = TASKS.get(cfg.task.name)
        model, info = load_pretrained(
            task.head.auto_model, model_dir, policy, key=str(model_dir), output_loading_info=True
        )
        check_trained_head(model, info, task.name, {name: TASKS.get(name).head for name in TASKS}, model_dir)
        if model.config.pad_token_id is None:
            # a decoder classifier from the hub may name no pad token; its tokenizer now has one (model/load.py)
            model.config.pad_token_id = tokenizer.pad_token_id
        model = model.to(runtime.device)
        check_vocabulary(
            len(tokenizer),
            model,
            tokenizer_source=str(model_dir),
            model_source=str(model_dir),
            key=str(model_dir),
            fix=RECEIVED_FIX,
        )
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)] if task.head.labelled else []
        return cls(
            run=run,
            cfg=cfg,
            task=task,
            model=model,
            tokenizer=tokenizer,
            labels=labels,
            runtime=runtime,
        )

    def predictions(self, examples: Sequence[Example], model=None) -> list:
        """Predictions of `model` (default: the run's) for `examples`.

        Examples the tokenizer cannot tell apart are run once and share one prediction object: audits ask for
        many such (an uncased model sees an uppercased sentence as the original, and zero-width characters vanish).
        """
        distinct, position = distinct_inputs(examples, self.tokenizer)
        predicted = self.predict_each(distinct, model)
        return [predicted[i] for i in position]

    def predict_each(self, examples: Sequence[Example], model=None) -> list:
        """One prediction per example as given, without looking for twins."""
        if self.task.language_model:
            raise FmtoolError(_LANGUAGE_MODEL.format(self.task.name))
        features = self.task.encode(examples, self.tokenizer, None, self.cfg.trainer)
        return self.task.predict(
            self.model if model is None else model, examples, features, self.runtime, self.tokenizer.pad_token_id
        )

    def scores(self, examples: Sequence[Example], model=None) -> list[ExampleScore]:
        """Per example, the loss of its gold labels under `model` (default: the run's)."""
        if self.task.language_model:
            raise FmtoolError(_LANGUAGE_MODEL.format(self.task.name))
        model = self.model if model is None else model
        label2id = {label: int(i) for label, i in model.config.label2id.items()}
        examples = to_model_labels("audit data", examples, list(label2id), {})
        features = self.task.encode(examples, self.tokenizer, label2id, self.cfg.trainer)
        return self.task.losses(model, examples, features, self.runtime, self.tokenizer.pad_token_id)

    def evaluate(self, examples: Sequence[Example]) -> tuple[dict[str, Any], list]:
        predictions = self.predictions(examples)
        return self.task.score(examples, predictions, self.labels), predictions

    def predict_texts(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """What `fmtool predict` returns for raw texts: the task's answer (entities, a label, fills) for each."""
        return self.task.predict_texts(self, texts)


class SharedPredictions:
    """The audited model's predictions, kept while one set of audits runs: the families ask about the same
    sentences (fairness, bias, robustness and calibration all read the validation split), so each input the
    model reads alike (input_keys) is run once. Other models' predictions (twins, shadow models) are not kept."""

    def __init__(self, loaded: LoadedRun) -> None:
        self.loaded = loaded
        self.known: dict[tuple, Any] = {}

    def __call__(self, examples: Sequence[Example], model=None) -> list:
        if model is not None:
            return self.loaded.predictions(examples, model)
        keys = input_keys(examples, self.loaded.tokenizer)
        new: dict[tuple, Example] = {}
        for key, example in zip(keys, examples):
            if key not in self.known:
                new.setdefault(key, example)
        if new:
            self.known.update(zip(new, self.loaded.predict_each(list(new.values()))))
        return [self.known[key] for key in keys]
