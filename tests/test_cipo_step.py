"""cipo_jax.cipo.step.collect with a fake sampler and scorer that return chosen verdicts; every
expected advantage, weight and replay ratio below is worked out by hand in the comments."""

import subprocess
import sys

import numpy as np
import pytest

from cipo_jax.cipo.correction import ReplayState
from cipo_jax.cipo.step import CORRECTION, CORRECTION_SEED, ORIGINAL, Samples, collect, grpo_advantages
from cipo_jax.config import load_config
from cipo_jax.data.tasks import Task

EPS = 1e-6  # grpo.adv_eps


def task(i: int) -> Task:
    return Task(id=f"t{i}", prompt=f"Q{i}", messages=None, reference="1", verifier="exact")


class Fake:
    """A sampler that answers from tables (first attempts per task, corrections per (task,
    attempt)) and a scorer that says 1 for the text "1" (spaces aside); both record their calls."""

    def __init__(self, attempts: dict[str, list[str]], fixes: dict[tuple[str, str], list[str]] | None = None):
        self.attempts, self.fixes = attempts, fixes or {}
        self.sample_calls, self.score_calls = [], []

    def sample(self, requests, n, seed_offset) -> Samples:
        self.sample_calls.append((requests, n, seed_offset))
        texts = []
        for r in requests:
            got = self.attempts[r.task.id] if r.attempt is None else self.fixes[(r.task.id, r.attempt)]
            assert len(got) == n
            texts += got
        prompts = [[len(r.attempt or ""), int(r.task.id[1:])] for r in requests]
        tokens = [[ord(c) for c in t] + [0] for t in texts]  # the stop token 0 ends every row
        return Samples(prompts=prompts, tokens=tokens, logprobs=[[-0.5] * len(t) for t in tokens],
                       finish=["stop"] * len(texts), texts=texts)

    def score(self, tasks, texts):
        self.score_calls.append((tasks, texts))
        ok = np.array([t.strip() == task.reference for task, t in zip(tasks, texts)], float)
        return ok, ["ok" if v else "failed" for v in ok]


def config(**over):
    return load_config(None, [f"{k}={v}" for k, v in over.items()])


def run(fake, tasks, cfg, replay=None, seed=0):
    replay = ReplayState.initial(cfg) if replay is None else replay
    return collect(fake.sample, fake.score, tasks, cfg, replay, np.random.default_rng(seed))


def test_grpo_success_failure_mix():
    # Prompt 0: (1, 0, 0, 0): mean 1/4, population std sqrt(3)/4 -> A = (3/4, -1/4 x3) / (sqrt(3)/4 + eps).
    # Prompt 1: (1, 1, 0, 0): mean 1/2, std 1/2 -> A = (1, 1, -1, -1) * 0.5 / (0.5 + eps).
    fake = Fake({"t0": ["1", "2", "3", "4"], "t1": ["1", "1", "0", "0"]})
    ro = run(fake, [task(0), task(1)], config(**{"grpo.group_size": 4, "cipo.C": 0}))
    s3 = np.sqrt(3) / 4
    want = [0.75 / (s3 + EPS)] + [-0.25 / (s3 + EPS)] * 3 + [0.5 / (0.5 + EPS)] * 2 + [-0.5 / (0.5 + EPS)] * 2
    np.testing.assert_allclose([r.advantage for r in ro.rows], want, rtol=1e-6)
    assert [r.stream for r in ro.rows] == [ORIGINAL] * 8 and all(r.counted for r in ro.rows)
    # Row i continues prompt i // G; its completion is the sampled tokens with their log-probs.
    assert ro.rows[5].prompt == [0, 1] and ro.rows[5].completion == [ord("1"), 0] and ro.rows[5].logprobs == [-0.5] * 2
    assert ro.statuses == {"ok": 3, "failed": 5} and ro.num_prompts == 2
    assert ro.metrics["reward_mean"] == 3 / 8 and ro.metrics["zero_var_frac"] == 0.0
    assert ro.metrics["corr_count"] == 0.0 and ro.metrics["tokens"] == 16.0
    assert len(fake.sample_calls) == 1 and fake.sample_calls[0][1:] == (4, 0)  # C = 0: no correction call
    assert ro.replay == ReplayState.initial(config())


def test_all_fail_groups_get_corrections():
    # Every attempt fails: GRPO sees zero variance (A = 0 everywhere), yet with C = 4 >= 4 failures
    # every attempt is a source. Source "a0" gets corrections (right, wrong): per-source groupnorm
    # of (1, 0) = (0.5, -0.5) / (0.5 + eps); the others (wrong, wrong) -> (0, 0). No successful
    # source: the risk penalty never applies and the replay state stays as it was.
    fake = Fake({"t0": ["a0", "a1"], "t1": ["b0", "b1"]},
                {("t0", "a0"): ["1", "x"], ("t0", "a1"): ["x", "y"], ("t1", "b0"): ["x", "x"],
                 ("t1", "b1"): ["y", "y"]})
    cfg = config(**{"grpo.group_size": 2, "cipo.C": 4, "cipo.M": 2, "cipo.rho_init": 0.0})
    ro = run(fake, [task(0), task(1)], cfg)
    orig = [r for r in ro.rows if r.stream == ORIGINAL]
    corr = [r for r in ro.rows if r.stream == CORRECTION]
    assert [r.advantage for r in orig] == [0.0] * 4 and ro.metrics["zero_var_frac"] == 1.0
    requests = fake.sample_calls[1][0]
    assert fake.sample_calls[1][1:] == (2, CORRECTION_SEED)
    assert sorted((r.task.id, r.attempt) for r in requests) == [("t0", "a0"), ("t0", "a1"), ("t1", "b0"), ("t1", "b1")]
    by_source = {(r.task.id, r.attempt): corr[2 * k:2 * k + 2] for k, r in enumerate(requests)}
    np.testing.assert_allclose([r.advantage for r in by_source[("t0", "a0")]], [0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS)])
    assert all(r.advantage == 0.0 for key, rows in by_source.items() if key != ("t0", "a0") for r in rows)
    assert [r.nll_weight for r in by_source[("t0", "a0")]] == [1.0, 0.0]  # the one fix of a failure
    assert sum(r.nll_weight for r in corr) == 1.0
    # A correction row's prompt is its source's correction prompt (the fake encodes len(attempt)).
    assert by_source[("t0", "a0")][0].prompt == [2, 0]
    assert ro.metrics["corr_count"] == 8.0 and ro.metrics["corr_fix_rate"] == 1 / 8
    assert np.isnan(ro.metrics["retention"]) and ro.replay == ReplayState(rho=0.0)
    assert ro.statuses == {"failed": 11, "ok": 1}


def test_budget_above_failures_takes_successes_and_moves_rho():
    # Rewards (1, 0) and (1, 1) (" 1" scores as "1"); C = 5 > 1 failure: the failure and then all
    # 3 successes are sources (min(C, B G) = 4). Corrections (M = 1): the failure's is right, one
    # success's stays right, two break. A group of one normalises to 0, so
    # A' = 0 - lambda_risk [source right, correction wrong] = 0 for the failure, (0, -1, -1) for the rest.
    # Retention kappa = 1/3 (first observation: EMA = kappa); rho = 0 + 0.1 (0.9 - 1/3).
    fake = Fake({"t0": ["1", "z"], "t1": ["1", " 1"]},
                {("t0", "z"): ["1"], ("t0", "1"): ["1"], ("t1", "1"): ["x"], ("t1", " 1"): ["y"]})
    cfg = config(**{"grpo.group_size": 2, "cipo.C": 5, "cipo.M": 1, "cipo.rho_init": 0.0, "cipo.lambda_risk": 1.0})
    ro = run(fake, [task(0), task(1)], cfg, seed=3)
    corr = [r for r in ro.rows if r.stream == CORRECTION]
    requests = fake.sample_calls[1][0]
    assert [(r.task.id, r.attempt) for r in requests][0] == ("t0", "z")  # failures first
    assert sorted((r.task.id, r.attempt) for r in requests[1:]) == [("t0", "1"), ("t1", " 1"), ("t1", "1")]
    assert (corr[0].advantage, corr[0].nll_weight) == (0.0, 1.0)
    want = {("t0", "1"): 0.0, ("t1", "1"): -1.0, ("t1", " 1"): -1.0}
    assert [r.advantage for r in corr[1:]] == [want[(q.task.id, q.attempt)] for q in requests[1:]]
    assert [r.nll_weight for r in corr[1:]] == [0.0] * 3  # corrections of successes never enter L_nll
    assert ro.metrics["retention"] == pytest.approx(1 / 3) and ro.metrics["corr_fix_rate"] == 1.0
    assert ro.replay.kappa_ema == pytest.approx(1 / 3)
    assert ro.replay.rho == pytest.approx(0.1 * (0.9 - 1 / 3))
    assert ro.metrics["replay_ratio"] == 0.0  # the rho this step's sources were drawn with


def test_single_correction_keeps_risk_penalty_and_lambda_zero_removes_it():
    # M = 1, one success "1" and one failure "z": both sources (C = 2). The success's correction
    # breaks -> A' = -lambda_risk; the failure's correction is right -> A' = 0, L_nll weight 1.
    for lam in (1.0, 0.0, 2.5):
        fake = Fake({"t0": ["1", "z"]}, {("t0", "z"): ["1"], ("t0", "1"): ["x"]})
        cfg = config(**{"grpo.group_size": 2, "cipo.C": 2, "cipo.M": 1, "cipo.lambda_risk": lam})
        corr = [r for r in run(fake, [task(0)], cfg).rows if r.stream == CORRECTION]
        assert [(r.advantage, r.nll_weight) for r in corr] == [(0.0, 1.0), (-lam or 0.0, 0.0)]


def test_dr_grpo_and_overlong_filter():
    # std_normalize=False only centres: (1, 0) -> (0.5, -0.5). overlong=filter drops rows that hit
    # the length limit from every loss term but keeps them in the advantages' groups.
    fake = Fake({"t0": ["1", "0"]})
    cfg = config(**{"grpo.group_size": 2, "cipo.C": 0, "grpo.std_normalize": False, "grpo.overlong": "filter"})
    sample = fake.sample

    def truncating(requests, n, off):
        s = sample(requests, n, off)
        return Samples(s.prompts, s.tokens, s.logprobs, ["stop", "length"], s.texts)

    ro = collect(truncating, fake.score, [task(0)], cfg, ReplayState.initial(cfg), np.random.default_rng(0))
    assert [(r.advantage, r.counted) for r in ro.rows] == [(0.5, True), (-0.5, False)]
    assert ro.metrics["truncated_frac"] == 0.5


def test_grpo_advantages_shape_error():
    with pytest.raises(ValueError, match=r"rewards must be \(B, G\)"):
        grpo_advantages(np.zeros(3))


def test_cipo_package_imports_neither_jax_models_nor_train():
    code = ("import sys; import cipo_jax.cipo.step, cipo_jax.cipo.correction, cipo_jax.cipo.template; "
            "bad = [m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'cipo_jax.models', 'cipo_jax.train'))]; "
            "print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
