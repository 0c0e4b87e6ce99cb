"""Training throughput and model FLOP utilisation on one GPU: the default model, a BERT-base-sized model, and a
0.5B-class decoder (Qwen2-0.5B's shape) fine-tuned with LoRA as a causal LM.

    bash bench/gpu.sh RESULTS_DIR                       # on a machine with one H100/H200-class GPU, < 10 minutes
    python -m bench.gpu --out RESULTS_DIR --device cpu --quick    # checks the script itself on a CPU

For each model (token classification head, random init from config so nothing is downloaded) and each of
eager / torch.compile: fixed-shape batches of --seq-len tokens, bf16 autocast, fused AdamW, fmtool's own
training step; warm-up steps (and compilation) are excluded from the timing. Model FLOPs per token follow
the PaLM appendix: 6 * (non-embedding parameters) + 12 * layers * hidden * sequence length (attention),
so MFU = tokens/s * FLOPs per token / peak bf16 FLOP/s of the device (--peak-tflops, default H100/H200
SXM dense bf16: 989). With LoRA the frozen weights get no weight gradient: 4 FLOPs per frozen parameter and
token instead of 6 (forward, and backward through the activations), 6 for the adapters. Writes results.md and
results.json into --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification

from fmtool.config.schema import OptimizerConfig
from fmtool.optimizer import build_optimizer

MODELS = {
    # all-MiniLM-L6-v2's architecture
    "minilm-l6 (22.7M)": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base (110M)": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    # Qwen2-0.5B's shape, random init (no download), LoRA r=16 on q_proj and v_proj through fmtool.trainer.lora
    "qwen2-0.5b + LoRA (494M)": dict(
        model_type="qwen2",
        lora=True,
        vocab_size=151936,
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        tie_word_embeddings=True,
    ),
}
QUICK_MODELS = {
    "tiny (cpu check)": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "tiny qwen2 + LoRA (cpu check)": dict(
        model_type="qwen2",
        lora=True,
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=128,
    ),
}


def flops_per_token(model: torch.nn.Module, layers: int, hidden: int, seq_len: int) -> float:
    embedding = model.get_input_embeddings().weight
    dense = [p for p in model.parameters() if p is not embedding]
    trainable = sum(p.numel() for p in dense if p.requires_grad)
    frozen = sum(p.numel() for p in dense if not p.requires_grad)
    return 6 * trainable + 4 * frozen + 12 * layers * hidden * seq_len


def measure(
    name: str,
    shape: dict,
    *,
    compiled: bool,
    device: torch.device,
    batch_size: int,
    seq_len: int,
    steps: int,
    warmup: int,
    peak_tflops: float,
) -> dict:
    shape = dict(shape)
    model_type, lora = shape.pop("model_type", "bert"), shape.pop("lora", False)
    vocab_size = shape.pop("vocab_size", 30522)
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, num_labels=9, **shape)
    if lora:
        from fmtool.config.schema import LoraSettings
        from fmtool.trainer.lora import with_lora

        base = AutoModelForCausalLM.from_config(config)
        model = with_lora(base, LoraSettings(r=16, alpha=32.0, dropout=0.0), "CAUSAL_LM").to(device).train()
    else:
        model = AutoModelForTokenClassification.from_config(config).to(device).train()
    optimizer = build_optimizer(model, OptimizerConfig(lr=5e-5))
    forward = torch.compile(model) if compiled else model
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(10, min(30000, vocab_size), (batch_size, seq_len), generator=generator).to(device),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long, device=device),
    }
    # a causal LM predicts its own next tokens; a tagger one of 9 tags per token
    batch["labels"] = (
        batch["input_ids"] if lora else torch.randint(0, 9, (batch_size, seq_len), generator=generator).to(device)
    )

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = forward(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - started
    tokens_per_second = steps * batch_size * seq_len / seconds
    achieved = tokens_per_second * flops_per_token(model, shape["num_hidden_layers"], shape["hidden_size"], seq_len)
    return {
        "model": name,
        "compiled": compiled,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "batch_size": batch_size,
        "seq_len": seq_len,
        "steps": steps,
        "warmup_seconds": round(warmup_seconds, 1),
        "tokens_per_second": round(tokens_per_second),
        "samples_per_second": round(steps * batch_size / seconds, 1),
        "achieved_tflops": round(achieved / 1e12, 1),
        "mfu": round(achieved / (peak_tflops * 1e12), 4),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument(
        "--quick", action="store_true", help="a tiny model and a few steps: checks the script, measures nothing"
    )
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.seq_len, args.steps, args.warmup = 4, 32, 2, 1
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    environment = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "peak_tflops": args.peak_tflops,
    }
    rows = []
    for name, shape in (QUICK_MODELS if args.quick else MODELS).items():
        for compiled in (False, True):
            rows.append(
                measure(
                    name,
                    shape,
                    compiled=compiled,
                    device=device,
                    batch_size=args.batch_size,
                    seq_len=args.seq_len,
                    steps=args.steps,
                    warmup=args.warmup,
                    peak_tflops=args.peak_tflops,
                )
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)

    table = Table(
        title=(
            f"training throughput on {environment['device']} (bf16 autocast, fused AdamW, batch {args.batch_size} x "
            f"{args.seq_len} tokens)"
        )
    )
    columns = ["model", "compiled", "tokens/s", "samples/s", "TFLOP/s", "MFU", "warm-up s", "peak GB"]
    for column in columns:
        table.add_column(column, justify="right")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [
            row["model"],
            "yes" if row["compiled"] else "no",
            f"{row['tokens_per_second']:,}",
            f"{row['samples_per_second']}",
            f"{row['achieved_tflops']}",
            f"{100 * row['mfu']:.1f}%",
            f"{row['warmup_seconds']}",
            f"{row['peak_memory_gb']}",
        ]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"environment": environment, "rows": rows}, indent=2) + "\n")
    (args.out / "results.md").write_text(f"{table.title}\n\n" + "\n".join(lines) + "\n")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
