"""cipo_jax: Correction-Oriented Policy Optimization (CIPO) and GRPO for language models in JAX."""

__version__ = "0.1.0"
