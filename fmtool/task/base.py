"""The Task interface that each task plug-in (fmtool/task/<name>.py, configs/task/<name>.yaml) implements, and its
registry. Everything that differs between tasks is asked of the task: audits, predict, eval and the report read its
attributes and call its methods, and none of them tests its name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence

from fmtool.config.schema import TaskConfig, TrainConfig, TrainerConfig
from fmtool.dataset.batching import Feature
from fmtool.dataset.examples import Example
from fmtool.dataset.mlm import BlockFeature, Packing
from fmtool.inference import Runtime
from fmtool.model.build import Head
from fmtool.registry import Registry


@dataclass(frozen=True)
class ExampleScore:
    """How well a model fits one example's gold labels: the mean negative log-likelihood over its `units`
    (labelled words for NER, 1 for classification)."""

    loss: float
    units: int
    # each unit's negative log-likelihood (membership's Min-K%); empty: one unit, whose loss is `loss`
    unit_losses: tuple[float, ...] = ()


class Task(Protocol):
    name: str
    metrics: tuple[str, ...]  # headline metrics, the choices for trainer.metric
    head: Head  # the Auto class that builds its model; the architecture suffix of a checkpoint fine-tuned for it
    labels_each_word: bool  # one label per word (NER) rather than one per text: audits edit and compare words
    # trains a language model on raw documents: no label set, pre-training recipe, the language-model audits
    language_model: bool
    generates: bool  # continues text: fmtool predict's --max-new-tokens, --temperature and --top-p apply
    pipeline_tag: str  # the Hugging Face pipeline tag of its models (model card)
    peft_task_type: Optional[str]  # peft's TaskType for trainer.peft=lora (None: LoRA is not offered)
    intended_use: str  # what its models are for (model card)

    def config_problems(self, cfg: TrainConfig) -> list[str]:
        """This task's own checks of a whole config, reported with every other problem (fmtool/configure.py)."""

    def examples_from_texts(self, texts: Sequence[str], labels: Sequence[str]) -> list[Example]:
        """Raw texts as the task's examples, with a placeholder gold label from the model's `labels`."""

    def predict_texts(self, loaded, texts: Sequence[str]) -> list[dict[str, Any]]:
        """What `fmtool predict` returns for raw texts; `loaded` is the run (model, tokenizer, runtime, predictions)."""

    def objective(self, task: TaskConfig, seed: int, tokenizer) -> "LanguageModelling":
        """A language-model task's training objective (fmtool/pretrain.py); the others have none."""

    def filler_log_likelihoods(
        self, model, tokenizer, template: str, fillers: Sequence[str], batch_size: int
    ) -> list[float]:
        """A language-model task's score of each filler of `template`'s {secret} in context (the canary audit's
        exposure): masked LMs by pseudo-log-likelihood, causal LMs by the exact log-likelihood."""

    def document_scores(
        self, model, tokenizer, texts: Sequence[str], batch_size: int, max_tokens: int
    ) -> Optional[list[ExampleScore]]:
        """A language-model task's exact negative log-likelihood of each document and of each of its first max_tokens
        tokens (the membership audit's attacks); None where the task has no exact likelihood (masked LMs)."""


class LanguageModelling(Protocol):
    """What the pre-training recipe asks of a language-model task: how documents are packed into blocks, how blocks
    become a batch, how many positions a batch's loss averages over, the module the loop trains, and the held-out
    loss with its perplexity."""

    packing: Packing

    def collate(self, features: Sequence[BlockFeature], epoch: int) -> dict[str, Any]: ...

    def loss_units(self, labels) -> Any: ...

    def trained(self, model) -> Any: ...

    def held_out(
        self, model, blocks: Sequence[BlockFeature], runtime: Runtime, on_batch: Callable[[int], None]
    ) -> dict[str, Any]: ...

    def encode(
        self, examples: Sequence[Example], tokenizer, label2id: dict[str, int] | None, trainer: TrainerConfig
    ) -> list[Feature]:
        """Model inputs for `examples` (labels included when label2id is given)."""

    def predict(
        self,
        model,
        examples: Sequence[Example],
        features: Sequence[Feature],
        runtime: Runtime,
        pad_id: int,
        on_batch: Callable[[int], None],
    ) -> list[Any]:
        """One prediction per example (NER: tags and scores per word; classification: label and probabilities)."""

    def losses(
        self, model, examples: Sequence[Example], features: Sequence[Feature], runtime: Runtime, pad_id: int
    ) -> list[ExampleScore]:
        """Per example, the loss of its gold labels (features encoded with the model's label2id)."""

    def score(self, examples: Sequence[Example], predictions: Sequence[Any], labels: Sequence[str]) -> dict[str, Any]:
        """Headline metrics as floats at the top level, details under 'details'."""

    def primary_score(self, examples: Sequence[Example], predictions: Sequence[Any]) -> float:
        """score()'s metrics[0] alone, for audits that score many subsets (it skips the per-type reports)."""

    def record(self, example: Example, prediction: Any) -> dict[str, Any]:
        """A JSON-ready line for predictions/<split>.jsonl."""


TASKS: Registry[Task] = Registry("task")


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The top-level float figures of Task.score's result (what metrics.jsonl and tables show)."""
    return {k: v for k, v in metrics.items() if isinstance(v, float)}
