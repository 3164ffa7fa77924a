"""Persistent verifier worker processes with one wall-clock deadline per item.

Workers are started with the "spawn" context (the trainer has JAX threads; fork is unsafe) and
handle one item at a time, so the parent knows which item a worker is on. A worker that passes
the deadline is killed and replaced (item: "timeout"); one that dies is replaced (item:
"crashed"); a malformed reply is an "error". The batch always completes.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import time
from collections import deque
from multiprocessing.connection import wait

from cipo_jax.verifiers.table import Verdict, lookup

_CODE_SLACK_S = 3.0  # sandbox start-up and cleanup on top of the program's own time limit


def _warm_up() -> None:
    """Import and exercise math-verify once, so no item's deadline pays for it."""
    from cipo_jax.verifiers.math import check

    check(r"\boxed{1/2}", "0.5")


def _worker_main(conn, table) -> None:
    try:
        _warm_up()
    except Exception:  # a broken install shows up as per-item errors, not a dead pool
        pass
    conn.send("ready")
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        name, response, reference, meta = item
        try:
            verdict = lookup(name, table)(response, reference, meta)
            if not isinstance(verdict, Verdict):
                raise TypeError(f"verifier {name!r} returned {type(verdict).__name__}")
            reply = (verdict.reward, verdict.status, verdict.detail)
        except Exception as exc:  # a verifier bug or bad input fails this item only
            reply = (0.0, "error", f"{type(exc).__name__}: {exc}"[:500])
        conn.send(reply)


class _Worker:
    def __init__(self, ctx, table):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, table), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.item: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


class VerifierPool:
    """`with VerifierPool(workers=2, timeout_s=5.0) as pool: pool.score_batch(items)` where an
    item is (verifier, response, reference, meta). `table` overrides the verifier table (tests)."""

    def __init__(self, workers: int = 2, timeout_s: float = 5.0, *, table: dict | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.timeout_s = timeout_s
        self._table = table
        self._ctx = mp.get_context("spawn")
        self._workers = [_Worker(self._ctx, table) for _ in range(workers)]

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()
        self._workers = []

    def _deadline(self, item: tuple, timeout_s: float) -> float:
        name, _, _, meta = item
        if name == "code":
            timeout_s = max(timeout_s, float((meta or {}).get("timeout_s", 5.0)) + _CODE_SLACK_S)
        return time.monotonic() + timeout_s

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = _Worker(self._ctx, self._table)

    def _on_startup_message(self, worker: _Worker) -> None:
        try:
            worker.ready = worker.conn.recv() == "ready"
        except (EOFError, OSError):
            self._replace(worker)

    def _await_ready(self) -> None:
        """Block until a worker finished its start-up; item deadlines start only after it."""
        for _ in range(3):
            if any(w.ready for w in self._workers):
                return
            starting = list(self._workers)
            for conn in wait([w.conn for w in starting], timeout=120):
                self._on_startup_message(next(w for w in starting if w.conn is conn))
        if not any(w.ready for w in self._workers):
            raise RuntimeError("verifier workers fail to start; run one by hand to see why")

    def score_batch(self, items: list[tuple], *, timeout_s: float | None = None) -> list[Verdict]:
        """Verdicts in input order; every item gets one, whatever its worker does."""
        if not self._workers:
            raise RuntimeError("VerifierPool is closed")
        for item in items:
            lookup(item[0], self._table)  # unknown names fail before any work starts
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        results: list[Verdict | None] = [None] * len(items)
        pending = deque(range(len(items)))
        while pending or any(w.item is not None for w in self._workers):
            self._await_ready()
            for worker in list(self._workers):
                if worker.ready and worker.item is None and pending:
                    index = pending.popleft()
                    try:
                        worker.conn.send(tuple(items[index]))
                    except (OSError, ValueError):
                        results[index] = Verdict(0.0, "crashed", "worker unreachable")
                        self._replace(worker)
                        continue
                    worker.item, worker.deadline = index, self._deadline(items[index], timeout_s)
            busy = [w for w in self._workers if w.item is not None]
            starting = [w for w in self._workers if not w.ready]
            if not busy:
                continue
            wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = wait([w.conn for w in busy + starting], timeout=wait_s)
            for worker in starting:
                if worker.conn in ready:
                    self._on_startup_message(worker)
            for worker in busy:
                if worker.conn in ready:
                    try:
                        reward, status, detail = worker.conn.recv()
                        results[worker.item] = Verdict(float(reward), str(status), str(detail))
                        worker.item = None
                    except (EOFError, OSError):
                        results[worker.item] = Verdict(0.0, "crashed", "verifier process died")
                        self._replace(worker)
                    except (TypeError, ValueError) as exc:
                        results[worker.item] = Verdict(0.0, "error", f"malformed reply: {exc}")
                        worker.item = None
                elif time.monotonic() >= worker.deadline:
                    results[worker.item] = Verdict(0.0, "timeout", f"over {timeout_s:g} s")
                    self._replace(worker)
        return results  # type: ignore[return-value]


_SHARED: VerifierPool | None = None


def shared_pool(workers: int = 2) -> VerifierPool:
    """The process-wide pool behind `score`, `math.verify` and `math.verify_batch`."""
    global _SHARED
    if _SHARED is None:
        _SHARED = VerifierPool(workers=workers)
        atexit.register(_SHARED.close)
    return _SHARED


def score(verifier: str, response: str, reference: str, meta: dict | None = None,
          *, timeout_s: float | None = None) -> Verdict:
    """Score one response in the shared pool (the deadline and crash isolation included)."""
    return shared_pool().score_batch([(verifier, response, reference, meta)],
                                     timeout_s=timeout_s)[0]
