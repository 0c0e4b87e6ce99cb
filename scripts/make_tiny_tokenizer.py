"""Regenerate the tiny byte-level BPE tokenizer that fmtool's tiny decoder models (configs/model/tiny_gpt.yaml,
tiny_llama.yaml, tiny_qwen2.yaml) use, learnt from fmtool's own demo data, so tests and smoke runs of decoders need
no download. It has no pad token, as GPT-2's has none: fmtool sets one when it loads a tokenizer without.

python scripts/make_tiny_tokenizer.py
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2TokenizerFast

DEMO = Path(__file__).resolve().parents[1] / "fmtool" / "resources" / "demo"
OUT = Path(__file__).resolve().parents[1] / "fmtool" / "resources" / "tokenizers" / "tiny_bpe"
END_OF_TEXT = "<|endoftext|>"


def demo_lines() -> list[str]:
    lines = []
    for path in sorted(DEMO.rglob("*")):
        if path.suffix in (".txt", ".tsv", ".conll") and path.is_file():
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".conll":
                words = [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("-DOC")]
                lines.append(" ".join(words))
            else:
                lines += text.splitlines()
    return lines


def main() -> None:
    learnt = ByteLevelBPETokenizer(add_prefix_space=False)
    learnt.train_from_iterator(demo_lines(), vocab_size=1024, min_frequency=2, special_tokens=[END_OF_TEXT])
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=learnt._tokenizer, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=END_OF_TEXT
    )
    OUT.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(OUT)
    print(f"{len(tokenizer)} tokens -> {OUT}")


if __name__ == "__main__":
    main()
