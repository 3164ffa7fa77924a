"""Jitted rollout sampling with a KV cache: `generate(model, prompts, ...) -> SampleResult`."""

from cipo_jax.sampling.sampler import SampleResult, compile_count, generate

__all__ = ["SampleResult", "compile_count", "generate"]
