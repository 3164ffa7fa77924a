"""Host-side verifiers: math (math-verify), code (sandboxed tests), gym (reasoning-gym), exact.

Never imports JAX or the model: the trainer imports this module. The table is `VERIFIERS`;
`score` and `VerifierPool.score_batch` run it in worker processes with per-item deadlines.
"""

from cipo_jax.verifiers.pool import VerifierPool, score, shared_pool
from cipo_jax.verifiers.table import STATUSES, VERIFIERS, Item, Verdict, VerifierKind

__all__ = ["VERIFIERS", "STATUSES", "Item", "Verdict", "VerifierKind", "VerifierPool", "score", "shared_pool"]
