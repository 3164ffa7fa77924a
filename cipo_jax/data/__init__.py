"""Task data, tokenizers, chat templates and the correction turn. Host code: no JAX here."""

from cipo_jax.data.load import load_tasks
from cipo_jax.data.tasks import Task

__all__ = ["Task", "load_tasks"]
