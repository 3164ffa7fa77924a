"""Persistent verifier worker processes with one wall-clock deadline per item.

Workers are started with the "spawn" context (the trainer has JAX threads; fork is unsafe). The
parent hands each worker a short run of consecutive items (the G rollouts of one prompt share a
reference, so the worker's parse cache hits) and the worker replies item by item, so the parent
always knows which item a worker is on and when it started. A worker that passes an item's
deadline is killed and replaced (item: "timeout"); one that dies is replaced (item: "crashed");
a malformed reply is an "error". Unfinished items of a replaced worker go back to the queue.
The batch always completes.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import pickle
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import wait

from cipo_jax.verifiers.table import VERIFIERS, Item, Verdict, as_kind, lookup

_MAX_RUN = 16  # items handed to a worker at once


def _warm_up(table: dict | None) -> None:
    """Run every kind's warm-up once, so no item's deadline pays for imports."""
    for entry in (VERIFIERS if table is None else table).values():
        warm_up = as_kind(entry).warm_up
        if warm_up is not None:
            warm_up()


def _score_one(item: Item, table: dict | None) -> tuple[float, str, str]:
    try:
        verdict = lookup(item.verifier, table)(item.response, item.reference, item.meta)
        if not isinstance(verdict, Verdict):
            raise TypeError(f"verifier {item.verifier!r} returned {type(verdict).__name__}")
        return verdict.reward, verdict.status, verdict.detail
    except Exception as exc:  # a verifier bug or bad input fails this item only
        return 0.0, "error", f"{type(exc).__name__}: {exc}"[:500]


def _worker_main(conn, table) -> None:
    # Ctrl-C in a terminal signals the whole process group: the trainer handles it (checkpoint,
    # clean exit); a worker dying mid-item would turn in-flight verdicts into "crashed".
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _warm_up(table)
    except Exception:  # a broken install shows up as per-item errors, not a dead pool
        pass
    conn.send("ready")
    while True:
        try:
            run = conn.recv()
        except (EOFError, OSError):
            return
        for item in run:
            conn.send(_score_one(item, table))


class _Worker:
    def __init__(self, ctx, table):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, table), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.queue: deque[int] = deque()  # item indices sent, in order; the first is running
        self.deadline = 0.0  # for the first item of the queue

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


class VerifierPool:
    """`with VerifierPool(workers=2, timeout_s=5.0) as pool: pool.score_batch(items)` where an
    item is an `Item(verifier, response, reference, meta)`. `table` overrides the verifier table
    (tests; its entries are `VerifierKind`s or bare check functions)."""

    def __init__(self, workers: int = 2, timeout_s: float = 5.0, *, table: dict | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.timeout_s = timeout_s
        self._table = table
        self._ctx = mp.get_context("spawn")
        self._workers = [_Worker(self._ctx, table) for _ in range(workers)]
        self._lock = threading.Lock()  # one batch at a time; concurrent callers queue up

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for worker in self._workers:
                worker.kill()
            self._workers = []

    def _item_timeout(self, item: Item, timeout_s: float) -> float:
        return lookup(item.verifier, self._table).deadline_s(item.meta, timeout_s)

    def _replace(self, worker: _Worker, pending: deque) -> None:
        """Kill and replace `worker`; items it had not started go back to the queue front."""
        pending.extendleft(reversed(list(worker.queue)[1:]))
        worker.kill()
        self._workers[self._workers.index(worker)] = _Worker(self._ctx, self._table)

    def _on_startup_message(self, worker: _Worker, pending: deque) -> None:
        try:
            worker.ready = worker.conn.recv() == "ready"
        except (EOFError, OSError):
            self._replace(worker, pending)

    def _await_ready(self, pending: deque) -> None:
        """Block until a worker finished its start-up; item deadlines start only after it."""
        for _ in range(3):
            if any(w.ready for w in self._workers):
                return
            starting = list(self._workers)
            for conn in wait([w.conn for w in starting], timeout=120):
                self._on_startup_message(next(w for w in starting if w.conn is conn), pending)
        if not any(w.ready for w in self._workers):
            raise RuntimeError("verifier workers fail to start; run one by hand to see why")

    def _dispatch(self, items: list, pending: deque, timeout_s: float,
                  results: list) -> None:
        idle = [w for w in self._workers if w.ready and not w.queue]
        for worker in idle:
            if not pending:
                return
            size = max(1, min(_MAX_RUN, len(pending) // len(idle)))
            run = [pending.popleft() for _ in range(min(size, len(pending)))]
            try:
                worker.conn.send([items[i] for i in run])
            except (OSError, ValueError):
                worker.queue.extend(run)
                results[run[0]] = Verdict(0.0, "crashed", "worker unreachable")
                self._replace(worker, pending)
                continue
            worker.queue.extend(run)
            worker.deadline = time.monotonic() + self._item_timeout(items[run[0]], timeout_s)

    def score_batch(self, items: list[Item], *, timeout_s: float | None = None) -> list[Verdict]:
        """Verdicts in input order; every item gets one, whatever its worker does."""
        items = [_as_item(item) for item in items]
        for item in items:
            lookup(item.verifier, self._table)  # unknown names fail before any work starts
        with self._lock:
            if not self._workers:
                raise RuntimeError("VerifierPool is closed")
            return self._score(items, self.timeout_s if timeout_s is None else timeout_s)

    def _score(self, items: list[Item], timeout_s: float) -> list[Verdict]:
        results: list[Verdict | None] = [None] * len(items)
        pending: deque[int] = deque()
        for index, item in enumerate(items):
            try:
                pickle.dumps(item)
                pending.append(index)
            except Exception as exc:  # e.g. a meta dict holding a lambda
                results[index] = Verdict(0.0, "error", f"item cannot be sent to a worker: {exc}")
        while pending or any(w.queue for w in self._workers):
            self._await_ready(pending)
            self._dispatch(items, pending, timeout_s, results)
            busy = [w for w in self._workers if w.queue]
            starting = [w for w in self._workers if not w.ready]
            if not busy:
                continue
            wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = wait([w.conn for w in busy + starting], timeout=wait_s)
            for worker in starting:
                if worker.conn in ready:
                    self._on_startup_message(worker, pending)
            for worker in busy:
                if worker.conn in ready:
                    self._receive(worker, items, pending, timeout_s, results)
                elif time.monotonic() >= worker.deadline:
                    limit = self._item_timeout(items[worker.queue[0]], timeout_s)
                    results[worker.queue[0]] = Verdict(0.0, "timeout", f"over {limit:g} s")
                    self._replace(worker, pending)
        return results  # type: ignore[return-value]

    def _receive(self, worker: _Worker, items: list, pending: deque, timeout_s: float,
                 results: list) -> None:
        """Take every reply the worker has ready; restart the deadline for its next item."""
        while worker.queue and worker.conn.poll():
            index = worker.queue[0]
            try:
                reply = worker.conn.recv()
            except (EOFError, OSError):
                results[index] = Verdict(0.0, "crashed", "verifier process died")
                self._replace(worker, pending)
                return
            try:
                reward, status, detail = reply
                results[index] = Verdict(float(reward), str(status), str(detail))
            except (TypeError, ValueError) as exc:
                results[index] = Verdict(0.0, "error", f"malformed reply: {exc}")
            worker.queue.popleft()
            if worker.queue:
                worker.deadline = time.monotonic() + self._item_timeout(
                    items[worker.queue[0]], timeout_s)


def _as_item(item) -> Item:
    """An `Item`; a plain 4-sequence in the same order is accepted and named."""
    if isinstance(item, Item):
        return item
    if not isinstance(item, (tuple, list)) or len(item) != 4:
        raise ValueError(f"an item is Item(verifier, response, reference, meta), got {item!r:.80}")
    return Item(*item)


_SHARED: VerifierPool | None = None


def shared_pool(workers: int = 2) -> VerifierPool:
    """The process-wide pool behind `score`."""
    global _SHARED
    if _SHARED is None:
        _SHARED = VerifierPool(workers=workers)
        atexit.register(_SHARED.close)
    return _SHARED


def score(verifier: str, response: str, reference: str, meta: dict | None = None,
          *, timeout_s: float | None = None) -> Verdict:
    """Score one response in the shared pool (the deadline and crash isolation included)."""
    return shared_pool().score_batch([Item(verifier, response, reference, meta)],
                                     timeout_s=timeout_s)[0]
