"""Evaluate a policy on held-out tasks: n samples per problem for pass@k, and R attempts for
self-correction (t1 = a first attempt, t{r+1} = the correction of t{r} through the training
template; R = 2 by default).

Sampling and verifying go through the trainer's own helpers (`train.rollout.sample` / `score`,
which render with `cipo.template`), so evaluation sees exactly what training saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from cipo_jax.cipo.correction import is_success
from cipo_jax.cipo.template import Request
from cipo_jax.data.tasks import Task
from cipo_jax.data.tokenizer import Tokenizer
from cipo_jax.evaluation.passk import pass_at_k, pass_at_k_curve
from cipo_jax.evaluation.selfcorrect import round_values, self_correction_metrics
from cipo_jax.stats import mean_se, paired_bootstrap
from cipo_jax.train import rollout


@dataclass(frozen=True)
class EvalSettings:
    n: int = 8  # samples per problem for pass@k
    temperature: float = 1.0  # pass@k sampling temperature
    first_attempt: Literal["greedy", "sampled"] = "greedy"  # t1: temperature 0, or `temperature`
    max_new_tokens: int = 32
    template: str = ""  # the correction template (cfg.cipo.template)
    chat: bool = False
    seed: int = 0
    rows_per_call: int = 512  # bounds sampler memory; prompts are split into calls of at most this many rows
    rounds: int = 2  # self-correction attempts: t1, then rounds - 1 corrections, each of the previous one
    feedback: bool = False  # quote the verifier's reason for a failed attempt in its correction turn

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n (samples per problem) must be >= 1, got {self.n}")
        if self.first_attempt not in ("greedy", "sampled"):
            raise ValueError(f"first_attempt must be greedy or sampled, got {self.first_attempt!r}")
        if self.rounds < 2:
            raise ValueError(f"rounds (self-correction attempts) must be >= 2, got {self.rounds}")
        if not self.template:
            raise ValueError("the correction template is empty; pass the run's cipo.template")


def settings_from_config(cfg, **overrides) -> EvalSettings:
    """Settings that match a run's config (template, chat, response length), with overrides."""
    base = dict(max_new_tokens=cfg.sampling.max_new_tokens, template=cfg.cipo.template, chat=cfg.tasks.chat,
                feedback=cfg.cipo.feedback)
    return EvalSettings(**{**base, **overrides})


def _sample_texts(model, tokenizer: Tokenizer, requests: list[Request], n: int, temperature: float,
                  s: EvalSettings, seed: int, bar: tqdm) -> list[str]:
    """n completions per request, request-major, as text without the stop token."""
    texts: list[str] = []
    per_call = max(1, s.rows_per_call // n)
    for start in range(0, len(requests), per_call):
        chunk = requests[start:start + per_call]
        texts += rollout.sample(model, tokenizer, chunk, n, chat=s.chat, template=s.template,
                                max_new_tokens=s.max_new_tokens, temperature=temperature, seed=seed + start).texts
        bar.update(len(chunk) * n)
    return texts


def _verify(pool, tasks: list[Task], texts: list[str]) -> np.ndarray:
    return is_success(rollout.score(pool, tasks, texts)[0])  # the trainer's pass rule


def _feedback(pool, tasks: list[Task], texts: list[str], passed: np.ndarray) -> list[str]:
    """The verifier's reason for each failed attempt ("" for a passed one), as in training."""
    failed = np.flatnonzero(~passed)
    why = rollout.explain(pool, [tasks[i] for i in failed], [texts[i] for i in failed]) if failed.size else []
    out = [""] * len(tasks)
    for i, reason in zip(failed, why):
        out[i] = reason
    return out


def evaluate_policy(model, tokenizer: Tokenizer, tasks: list[Task], settings: EvalSettings, pool, *,
                    progress: bool = False) -> dict[str, Any]:
    """{"pass_at_k": {k: value}, "self_correction": {...}, "num_problems", "settings"}; `progress`
    shows a bar of sampled rows (a real model on a benchmark samples for many minutes)."""
    if not tasks:
        raise ValueError("no tasks to evaluate")
    with tqdm(total=len(tasks) * (settings.n + settings.rounds), desc="eval", unit="row", disable=not progress,
              mininterval=10) as bar:
        return _evaluate(model, tokenizer, tasks, settings, pool, bar)


def _evaluate(model, tokenizer: Tokenizer, tasks: list[Task], s: EvalSettings, pool, bar: tqdm) -> dict[str, Any]:
    prompts = [Request(t) for t in tasks]
    samples = _sample_texts(model, tokenizer, prompts, s.n, s.temperature, s, seed=s.seed, bar=bar)
    correct_pn = _verify(pool, [t for t in tasks for _ in range(s.n)], samples).reshape(len(tasks), s.n)

    t1_temperature = 0.0 if s.first_attempt == "greedy" else s.temperature
    texts = _sample_texts(model, tokenizer, prompts, 1, t1_temperature, s, seed=s.seed + 1, bar=bar)
    attempts = [_verify(pool, tasks, texts)]
    for r in range(1, s.rounds):  # attempt r + 1 corrects attempt r, with the training template
        feedback = _feedback(pool, tasks, texts, attempts[-1]) if s.feedback else [""] * len(tasks)
        corr_prompts = [Request(t, attempt=x, feedback=f) for t, x, f in zip(tasks, texts, feedback)]
        texts = _sample_texts(model, tokenizer, corr_prompts, 1, t1_temperature, s, seed=s.seed + 1 + r, bar=bar)
        attempts.append(_verify(pool, tasks, texts))
    t1, t2 = attempts[0], attempts[1]

    result = {"pass_at_k": {str(k): v for k, v in pass_at_k_curve(correct_pn).items()},
              "self_correction": self_correction_metrics(t1, t2),
              "num_problems": len(tasks), "num_distinct_problems": len({_problem_key(t) for t in tasks}),
              "settings": asdict(s),
              # per-problem raw outcomes: every metric above, its SE and paired CIs derive from them
              "per_problem": {"correct": correct_pn.sum(axis=1).tolist(), "n": s.n,
                              **{f"t{r + 1}": a.astype(int).tolist() for r, a in enumerate(attempts)}}}
    per = per_problem_metrics(result)
    result["pass_at_k_se"] = {k: mean_se(per[f"pass@{k}"])[1] for k in result["pass_at_k"]}
    result["self_correction_se"] = {key: mean_se(per[key])[1] for key in result["self_correction"]}
    rounds = round_values(np.stack(attempts))
    result["self_correction_rounds"] = {key: float(v.mean()) for key, v in rounds.items()}
    result["self_correction_rounds_se"] = {key: mean_se(v)[1] for key, v in rounds.items()}
    return result


def _problem_key(task: Task) -> str:
    return task.prompt if task.messages is None else repr(task.messages)


def per_problem_metrics(result: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each reported metric as its per-problem values (their mean is the metric): "pass@k" for
    every k of the result, and the self-correction metrics from the two attempts."""
    pp = result["per_problem"]
    n, correct = int(pp["n"]), np.asarray(pp["correct"], int)
    t1, t2 = np.asarray(pp["t1"], bool), np.asarray(pp["t2"], bool)
    out = {f"pass@{k}": np.array([pass_at_k(n, int(c), int(k)) for c in correct]) for k in result["pass_at_k"]}
    out.update({"acc_t1": t1.astype(float), "acc_t2": t2.astype(float), "delta": t2.astype(float) - t1,
                "delta_i2c": (~t1 & t2).astype(float), "delta_c2i": (t1 & ~t2).astype(float)})
    rounds = sum(1 for key in pp if key[0] == "t" and key[1:].isdigit())  # t1, t2, ... tR
    if rounds > 2:  # every per-round metric too
        attempts = np.stack([np.asarray(pp[f"t{r}"], bool) for r in range(1, rounds + 1)])
        out.update({k: v for k, v in round_values(attempts).items() if k not in out})
    return out


def paired_comparison(before: dict[str, Any], after: dict[str, Any], *, seed: int = 0) -> dict[str, dict]:
    """{metric: {"diff": after - before, "ci95": [lo, hi], "se"}} by a paired bootstrap over problems.
    Both results must come from the same problems in the same order (the same held-out set)."""
    if len(before["per_problem"]["correct"]) != len(after["per_problem"]["correct"]):
        raise ValueError("paired_comparison: the two evaluations saw different numbers of problems")
    b, a = per_problem_metrics(before), per_problem_metrics(after)
    return {key: paired_bootstrap(b[key], a[key], seed=seed) for key in b if key in a}


def format_table(columns: dict[str, dict[str, Any]], paired: dict[str, dict] | None = None) -> str:
    """A plain-text table: one row per metric, one column per evaluated policy (value ± SE over
    problems), and with `paired` a last column: the paired difference (last - first column)
    with its 95% bootstrap CI."""
    names = list(columns)
    ks = sorted({int(k) for c in columns.values() for k in c["pass_at_k"]})
    labels = {"acc_t1": "acc@t1", "acc_t2": "acc@t2", "delta": "delta", "delta_i2c": "delta(i->c)",
              "delta_c2i": "delta(c->i)"}
    rows = [(f"pass@{k}", f"pass@{k}", [(c["pass_at_k"].get(str(k)), c.get("pass_at_k_se", {}).get(str(k)))
                                       for c in columns.values()]) for k in ks]
    rows += [(label, key, [(c["self_correction"][key], c.get("self_correction_se", {}).get(key))
                           for c in columns.values()]) for key, label in labels.items()]
    # rounds 3..R of multi-round self-correction (rounds 1-2 are the rows above)
    later = dict.fromkeys(k for c in columns.values() for k in c.get("self_correction_rounds", {})
                          if int(k.rsplit("_t", 1)[1]) > 2)
    short = {"acc": "acc@", "delta": "delta@", "delta_i2c": "i->c@", "delta_c2i": "c->i@"}
    rows += [(short[key.rsplit("_t", 1)[0]] + "t" + key.rsplit("_t", 1)[1], key,
              [(c.get("self_correction_rounds", {}).get(key), c.get("self_correction_rounds_se", {}).get(key))
               for c in columns.values()]) for key in later]
    width = max(16, *(len(n) for n in names))
    header = "metric".ljust(12) + "".join(n.rjust(width + 2) for n in names)
    lines = [header + ("paired diff [95% CI]".rjust(30) if paired else "")]
    for label, key, values in rows:
        cells = "".join(("-" if v is None else f"{v:.3f}" if se is None else f"{v:.3f} ± {se:.3f}").rjust(width + 2)
                        for v, se in values)
        if paired and key in paired:
            d, (lo, hi) = paired[key]["diff"], paired[key]["ci95"]
            cells += f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]".rjust(30)
        lines.append(label.ljust(12) + cells)
    return "\n".join(lines)
