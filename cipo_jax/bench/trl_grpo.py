"""TRL's GRPOTrainer at `bench rl-step`'s shape, run in its own interpreter (a separate venv with
requirements-bench.txt): SmolLM2-135M from the same GGUF in float32, B prompts x G generations,
`new_tokens` per completion, `accum` micro-batches, one optimizer step per generation round,
beta = 0 (no reference model), the same 1-digit arithmetic in the chat template.

    python -m cipo_jax.bench.trl_grpo --gguf FILE --steps 3 --out trl.json

Imports torch / transformers / trl only (never JAX): torch's OpenMP threads must not share a
process with XLA. Writes {"step_s": [seconds of each step], ...} to --out.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    torch.set_num_threads(args.threads)
    gguf = Path(args.gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model is flagged as quantized (the trainer refuses it) though its weights are
    # dequantised fp32: the same weights in a plain model.
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    rng = random.Random(0)
    rows = []
    for _ in range(args.prompts * (args.steps + 1)):
        a, b, op = rng.randint(0, 9), rng.randint(0, 9), rng.choice("+-")
        rows.append({"prompt": [{"role": "user", "content": f"Q: {a} {op} {b} ="}],
                     "answer": str(a + b if op == "+" else a - b)})

    def reward(completions, answer, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float((re.findall(r"-?\d+", t) or [None])[-1] == ans) for t, ans in zip(texts, answer)]

    class Clock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter() - self.start)

    clock = Clock()
    config = trl.GRPOConfig(
        output_dir=str(Path(args.out).parent / "trl_out"), per_device_train_batch_size=args.prompts * args.group // args.accum,
        gradient_accumulation_steps=args.accum, num_generations=args.group, max_completion_length=args.new_tokens,
        max_steps=args.steps, learning_rate=2e-6, beta=0.0, temperature=1.0, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, bf16=False, seed=0, dataloader_num_workers=0,
    )
    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows),
                              processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    Path(args.out).write_text(json.dumps({"step_s": clock.times, "trl": trl.__version__, "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
