"""Tunix's vanilla sampler (`tunix.generate.sampler.Sampler`, google-tunix 0.1.7) at `bench sample`'s
shape, run in its own interpreter (a separate venv: `requirements-bench.txt` says how):

    python -m cipo_jax.bench.tunix_sampler --batches 1,8,32 --new-tokens 64 --prompt-len 32 --out t.json

The model is Tunix's own Llama (`tunix.models.llama3.model.Llama3`) at exactly SmolLM2-135M's shape
(30 layers, hidden 576, MLP 1536, 9 query / 3 KV heads of 64, vocabulary 49152, tied embeddings,
RMS eps 1e-5), float32, with Tunix's random initialisation: decode speed depends on the shapes and
dtypes, not on the values, so the real weights are not loaded (the greedy tokens are meaningless).
Tunix 0.1.7's Llama applies RoPE with its default theta 1e6 whatever the config says (speed is
the same). Prompts are `--prompt-len` random ids, the same as `bench sample`'s other sides draw,
handed over through a tokenizer that reads space-separated ids (no BOS added); the stop token is
-1, never produced, so every row decodes exactly `--new-tokens` tokens (checked). The KV cache
holds prompt + new tokens, the least Tunix accepts (it attends over every cache slot each step).

Timing matches `bench sample`'s own workers: per batch, one warm-up call (compile included),
then the best of `--repeats` calls; tok/s = batch * new tokens / best, compile_s = warm-up - best.
Each call is Tunix's whole `Sampler.__call__` (host-side state set-up, jitted prefill, jitted
decode `while_loop`, tokens fetched to the host), as ours is our whole `generate`.

Imports JAX / Flax / Tunix from the interpreter it runs in, never cipo_jax's modules. Writes
{"<batch>": {"tok_s", "compile_s", "tokens", "compiles", "timed_compiles"}, "param_bytes", ...}
to --out; `compiles` counts XLA compilations in the warm-up call, `timed_compiles` in the timed ones.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# SmolLM2-135M (HuggingFaceTB/SmolLM2-135M config.json) in tunix.models.llama3.model.ModelConfig's terms.
SMOLLM2_135M = dict(num_layers=30, vocab_size=49152, embed_dim=576, hidden_dim=1536, num_heads=9, head_dim=64,
                    num_kv_heads=3, rope_theta=100_000, norm_eps=1e-5, weight_tying=True)
NEVER = -1  # the stop token: no vocabulary id


class IdTokenizer:
    """The interface Tunix's TokenizerAdapter asks for, over space-separated token ids: prompts go in
    as ids, no BOS is added (bos_id None), padding is id 0 (prompts are drawn from 1000..40000),
    and the EOS id is one the model never produces."""

    def encode(self, text: str, **_) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids, **_) -> str:
        return " ".join(str(int(t)) for t in ids)

    def bos_id(self):
        return None

    def eos_id(self) -> int:
        return NEVER

    def pad_id(self) -> int:
        return 0


def record(batch: int, new_tokens: int, first_s: float, best_s: float, tokens: list[list[int]]) -> dict:
    """One batch's figures, as `bench sample`'s workers write them."""
    if any(len(row) != new_tokens for row in tokens):
        raise RuntimeError(f"Tunix returned {sorted({len(r) for r in tokens})} tokens per row, not {new_tokens}")
    return {"tok_s": batch * new_tokens / best_s, "compile_s": first_s - best_s, "tokens": tokens}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import importlib.metadata

    import jax
    import numpy as np
    from flax import nnx
    from tunix.generate.sampler import CacheConfig, Sampler
    from tunix.models.llama3.model import Llama3, ModelConfig

    compiles = [0]

    def count(event: str, *_, **__):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles[0] += 1

    jax.monitoring.register_event_duration_secs_listener(count)
    config = ModelConfig(**SMOLLM2_135M)
    model = Llama3(config, rngs=nnx.Rngs(0))
    cache = CacheConfig(cache_size=args.prompt_len + args.new_tokens, num_layers=config.num_layers,
                        num_kv_heads=config.num_kv_heads, head_dim=config.head_dim)
    sampler = Sampler(model, IdTokenizer(), cache)
    result: dict = {"param_bytes": sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param))),
                    "cache_size": cache.cache_size, "tunix": importlib.metadata.version("google-tunix"),
                    "jax": jax.__version__}
    rng = np.random.default_rng(0)  # the prompts bench sample's other workers draw
    for b in (int(x) for x in args.batches.split(",")):
        texts = [" ".join(map(str, row)) for row in rng.integers(1000, 40000, size=(b, args.prompt_len))]

        def run():
            out = sampler(texts, max_generation_steps=args.new_tokens, max_prompt_length=args.prompt_len,
                          temperature=0.0, eos_tokens=[NEVER])
            return [np.asarray(t).tolist() for t in out.tokens]

        before = compiles[0]
        t0 = time.perf_counter()
        tokens = run()
        first = time.perf_counter() - t0
        warm = compiles[0]
        times = []
        for _ in range(max(args.repeats, 1)):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        result[str(b)] = {**record(b, args.new_tokens, first, min(times), tokens), "compiles": warm - before,
                          "timed_compiles": compiles[0] - warm}
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
