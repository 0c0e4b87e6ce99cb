"""Decoder backbones (GPT-2, Llama, Qwen2) for NER and classification: the tokenizer gets a pad token and, when it is
byte-level BPE, a prefix space for pre-split words; a sequence classifier pools each row's last real token with
either padding side; model.bidirectional lets every position see the words after it; and each family trains,
predicts, evaluates and is audited by every default family."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tokenizers import Regex, pre_tokenizers

from fmtool.auditing import audit_loaded
from fmtool.config.compose import resolved
from fmtool.configure import compose_train_config
from fmtool.model import build_model
from fmtool.model.build import special_token_ids
from fmtool.model.load import LoadPolicy, load_tokenizer
from fmtool.predict import LoadedRun
from fmtool.task import TASKS
from fmtool.task.base import headline
from tests.conftest import OVERFIT, REPO, tiny_config, train_tiny

TINY_BPE = REPO / "fmtool" / "resources" / "tokenizers" / "tiny_bpe"
DECODERS = ["tiny_gpt", "tiny_llama", "tiny_qwen2"]


def _words(tokenizer, words: list[str]) -> list[str]:
    return tokenizer.convert_ids_to_tokens(tokenizer(words, is_split_into_words=True)["input_ids"])


def test_a_byte_level_tokenizer_gets_a_pad_token_and_a_prefix_space_for_pre_split_words():
    tokenizer = load_tokenizer(TINY_BPE, LoadPolicy())
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    # each word tokenized as it is inside a sentence: with its leading space (Ġ)
    assert _words(tokenizer, ["Maria", "visited", "Berlin"]) == ["ĠM", "aria", "Ġvisited", "ĠBerlin"]
    assert _words(tokenizer, ["visited"]) == tokenizer.tokenize(" visited")


def test_a_qwen2_tokenizer_gets_the_prefix_space_too(tmp_path):
    """Qwen2's tokenizer splits with a regex, then ByteLevel(add_prefix_space=False): run_ner leaves it alone."""
    qwen = tmp_path / "qwen2"
    shutil.copytree(TINY_BPE, qwen)
    plain = load_tokenizer(qwen, LoadPolicy())
    plain.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\s?\w+|\s?[^\s\w]+|\s+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    plain.save_pretrained(qwen)
    settings = json.loads((qwen / "tokenizer_config.json").read_text())
    (qwen / "tokenizer_config.json").write_text(json.dumps({**settings, "tokenizer_class": "Qwen2Tokenizer"}))
    tokenizer = load_tokenizer(qwen, LoadPolicy())
    assert type(tokenizer).__name__.startswith("Qwen2Tokenizer")
    assert _words(tokenizer, ["Maria", "visited", "Berlin"]) == ["ĠM", "aria", "Ġvisited", "ĠBerlin"]


def test_a_generic_fast_tokenizer_folder_gets_the_prefix_space_and_trains(tmp_path):
    """What PreTrainedTokenizerFast(tokenizer_object=...).save_pretrained() writes for a byte-level BPE learnt with
    the tokenizers library (tokenizer_class TokenizersBackend) ignores add_prefix_space: it is set on the backend."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_file(str(TINY_BPE / "tokenizer.json"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    generic = tmp_path / "generic"
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>").save_pretrained(generic)
    tokenizer = load_tokenizer(generic, LoadPolicy())
    assert _words(tokenizer, ["Maria", "visited", "Berlin"]) == ["ĠM", "aria", "Ġvisited", "ĠBerlin"]
    run, results = train_tiny(
        tmp_path / "run", "ner", "model=tiny_gpt", f"model.tokenizer={generic}", "trainer.max_steps=2", "audit=none"
    )
    assert run.status()["state"] == "complete" and results["train"]["updates"] == 2


@pytest.mark.parametrize("model", ["tiny_gpt", *(pytest.param(m, marks=pytest.mark.slow) for m in DECODERS[1:])])
@pytest.mark.parametrize("side", ["right", "left"])
def test_a_decoder_classifier_pools_each_rows_last_real_token_with_either_padding(model, side):
    cfg = tiny_config("classification", f"model={model}")
    tokenizer = load_tokenizer(cfg.model.tokenizer, LoadPolicy())
    tokenizer.padding_side = side
    torch.manual_seed(0)
    classifier = build_model(
        cfg.model,
        TASKS.get("classification").head,
        ["negative", "positive"],
        vocab_size=len(tokenizer),
        token_ids=special_token_ids(tokenizer),
    ).eval()
    texts = ["a wonderful film", "an awful , awful and very long film that nobody liked"]
    padded = tokenizer(texts, padding=True, return_tensors="pt")
    # positions count real tokens only, as generate() does, so GPT-2's absolute positions ignore left padding
    positions = (padded["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        batch = classifier(**padded, position_ids=positions).logits
        alone = torch.cat([classifier(**tokenizer([t], return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "model", ["tiny_llama", *(pytest.param(m, marks=pytest.mark.slow) for m in ("tiny_gpt", "tiny_qwen2"))]
)
def test_bidirectional_attention_lets_the_first_word_see_the_last(model):
    tokenizer = load_tokenizer(TINY_BPE, LoadPolicy())
    first_logits = {}
    for bidirectional in (False, True):
        cfg = tiny_config("ner", f"model={model}", f"model.bidirectional={str(bidirectional).lower()}")
        torch.manual_seed(0)
        tagger = build_model(cfg.model, TASKS.get("ner").head, ["O", "B-PER", "I-PER"], vocab_size=len(tokenizer))
        ids = tokenizer(["Maria visited Berlin"], return_tensors="pt")["input_ids"].repeat(2, 1)
        ids[1, -1] = tokenizer.convert_tokens_to_ids("Ġvisited")  # only the last word differs
        with torch.no_grad():
            first_logits[bidirectional] = tagger.eval()(input_ids=ids).logits[:, 0]
    assert torch.equal(first_logits[False][0], first_logits[False][1])
    assert (first_logits[True][0] - first_logits[True][1]).abs().max() > 1e-4


def test_bidirectional_is_refused_for_a_language_model():
    from fmtool.errors import FmtoolError

    with pytest.raises(FmtoolError, match="model.bidirectional=true is for fine-tuning"):
        tiny_config("mlm", "model.bidirectional=true")


def test_a_tiny_gpt_tagger_trains_saves_and_predicts(tmp_path):
    run, results = train_tiny(tmp_path / "run", "ner", "model=tiny_gpt", *OVERFIT["ner"])
    loaded = LoadedRun.load(run.path)
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id is not None
    assert results["after"]["validation"]["f1"] > results["before"]["validation"]["f1"]
    [record] = loaded.predict_texts(["Maria Lopez visited Berlin ."])
    assert {e["text"] for e in record["entities"]} <= {"Maria", "Lopez", "Maria Lopez", "visited", "Berlin", "."}


@pytest.mark.parametrize("task", ["ner", pytest.param("classification", marks=pytest.mark.slow)])
def test_a_tiny_mistral_trains_for_each_labelling_task(tmp_path, task):
    run, results = train_tiny(tmp_path / "run", task, "model=tiny_mistral", *OVERFIT[task])
    metric = TASKS.get(task).metrics[0]
    assert results["after"]["validation"][metric] > results["before"]["validation"][metric]
    assert LoadedRun.load(run.path).model.config.model_type == "mistral"


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ner", "classification"])
@pytest.mark.parametrize("model", DECODERS)
def test_each_decoder_family_trains_predicts_and_passes_through_every_default_audit(tmp_path, model, task):
    run, results = train_tiny(tmp_path / "run", task, f"model={model}", *OVERFIT[task])
    metric = TASKS.get(task).metrics[0]
    # a tiny model on 24 repeated examples: training moves its headline figure off the random start
    assert results["after"]["validation"][metric] > results["before"]["validation"][metric]
    loaded = LoadedRun.load(run.path)
    assert loaded.predict_texts(["Maria Lopez visited Berlin ."])
    metrics, _ = loaded.evaluate(run.load_split("validation"))
    # the saved model evaluates as the run did at its end
    assert headline(metrics) == pytest.approx(headline(results["after"]["validation"]), abs=1e-3)
    defaults = resolved(compose_train_config([f"+task={task}"]).audit)
    report = audit_loaded(loaded, defaults, run.path)
    assert [a["name"] for a in report["audits"]] == list(defaults)
    # every family measured something or says why it could not
    assert all(any(c["value"] is not None for c in a["checks"]) or a["warnings"] for a in report["audits"])
    assert (run.report_dir / "report.html").is_file()
