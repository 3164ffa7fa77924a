"""The prefix-continuation correction (cipo.construction=prefix) and execution feedback: requests,
rows, masks (against the NumPy reference), and a few real training steps."""

from __future__ import annotations

import json
from dataclasses import asdict

import jax.numpy as jnp
import numpy as np
import pytest

import numpy_reference as ref
from cipo_jax.cipo.correction import ReplayState
from cipo_jax.cipo.loss import LossBatch, LossConfig, cipo_loss, loss_normalisers, token_logprobs
from cipo_jax.cipo.step import CORRECTION, ORIGINAL, Samples, collect, prefix_cut
from cipo_jax.cipo.template import Request, correction_turn
from cipo_jax.config import load_config
from cipo_jax.data.tasks import Task
from cipo_jax.train.batch import pack_rows

STOP = 0


def task(i: int) -> Task:
    return Task(id=f"t{i}", prompt=f"Q{i}", messages=None, reference="1", verifier="exact")


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


class FakeContinuer:
    """First attempts and continuations from tables; text in, characters as token ids. The prompt
    of task i is the ids [100 + i, 200 + i]; a continuation request's prompt adds its prefix."""

    def __init__(self, attempts: dict[str, list[str]], continuations: dict[tuple[str, str], list[str]]):
        self.attempts, self.continuations = attempts, continuations
        self.requests, self.scored = [], []

    def sample(self, requests, n, seed_offset) -> Samples:
        self.requests.append(requests)
        prompts, tokens, texts = [], [], []
        for r in requests:
            i = int(r.task.id[1:])
            prefix = "".join(map(chr, r.prefix or ()))
            got = self.attempts[r.task.id] if r.prefix is None else self.continuations[(r.task.id, prefix)]
            assert len(got) == n and r.attempt is None
            prompts.append([100 + i, 200 + i, *(r.prefix or ())])
            tokens += [ids(t) + [STOP] for t in got]
            texts += [prefix + t for t in got]  # what rollout.sample returns: prefix + continuation
        return Samples(prompts=prompts, tokens=tokens, logprobs=[[-0.7] * len(t) for t in tokens],
                       finish=["stop"] * len(tokens), texts=texts)

    def score(self, tasks, texts):
        self.scored.append(list(texts))
        ok = np.array([t.endswith("11") for t in texts], float)  # a right answer ends in "11"
        return ok, ["ok" if v else "failed" for v in ok]


def prefix_config(**over):
    base = {"cipo.construction": "prefix", "cipo.prefix_fraction": 0.5, "grpo.group_size": 2, "cipo.M": 2,
            "cipo.C": 2, "cipo.rho_init": 0.0, "cipo.eta": 0.05}
    return load_config(None, [f"{k}={v}" for k, v in {**base, **over}.items()])


def test_prefix_cut_keeps_the_floor_fraction_of_the_body():
    assert prefix_cut([5, 6, 7, 8, STOP], "stop", 0.5) == [5, 6]  # the stop token is not the attempt
    assert prefix_cut([5, 6, 7, 8, 9], "length", 0.5) == [5, 6]  # floor(2.5)
    assert prefix_cut([5, 6, 7], "length", 0.0) == []
    assert prefix_cut([STOP], "stop", 0.9) == []


def test_prefix_rows_hold_the_continuation_only():
    # Both tasks fail every attempt ("1234" and "9876"); the sources are cut after 2 tokens.
    fake = FakeContinuer({"t0": ["1234", "1234"], "t1": ["9876", "9876"]},
                         {("t0", "12"): ["1", "22"], ("t1", "98"): ["1", "0"]})
    cfg = prefix_config()
    ro = collect(fake.sample, fake.score, [task(0), task(1)], cfg, ReplayState.initial(cfg), np.random.default_rng(0))
    requests = fake.requests[1]
    assert sorted("".join(map(chr, r.prefix)) for r in requests) == ["12", "98"]
    # the verifier judged prefix + continuation, all wrong
    assert sorted(fake.scored[1]) == sorted(["121", "1222", "981", "980"])
    corr_rows = [r for r in ro.rows if r.stream == CORRECTION]
    assert len(corr_rows) == 4 and all(r.nll_weight == 0.0 for r in corr_rows)  # none succeeded
    for r in corr_rows:
        i = r.prompt[0] - 100
        prefix = {0: ids("12"), 1: ids("98")}[i]
        assert r.prompt == [100 + i, 200 + i, *prefix]  # x + the kept prefix: never in any mask
        assert r.completion[-1] == STOP and len(r.logprobs) == len(r.completion)
    assert all(r.stream == ORIGINAL for r in ro.rows[:4])


def test_successful_continuation_gets_the_nll_weight():
    # t0's attempts fail; the continuation "1" of prefix "1" makes "11": a fix.
    fake = FakeContinuer({"t0": ["10", "10"]}, {("t0", "1"): ["1", "3"]})
    cfg = prefix_config(**{"cipo.C": 1})
    ro = collect(fake.sample, fake.score, [task(0)], cfg, ReplayState.initial(cfg), np.random.default_rng(0))
    corr_rows = [r for r in ro.rows if r.stream == CORRECTION]
    assert [r.nll_weight for r in corr_rows] == [1.0, 0.0]
    assert corr_rows[0].advantage > 0 > corr_rows[1].advantage
    assert ro.metrics["corr_fix_rate"] == 0.5


def test_prefix_masks_match_the_numpy_reference():
    fake = FakeContinuer({"t0": ["1234", "1234"], "t1": ["9876", "11"]},
                         {("t0", "12"): ["1", "11"], ("t1", "98"): ["11", "0"], ("t1", "1"): ["1", "2"]})
    cfg = prefix_config(**{"cipo.rho_init": 0.5, "cipo.rho_max": 0.5})
    ro = collect(fake.sample, fake.score, [task(0), task(1)], cfg, ReplayState.initial(cfg), np.random.default_rng(1))
    packed = pack_rows(ro.rows, len_multiple=4)
    N, T = packed["tokens"].shape
    # The mask, built independently from the requests the sampler saw: a row counts the tokens
    # after x (2 ids) and, for a continuation, after its kept prefix.
    prefixes = [()] * 4 + [r.prefix for r in fake.requests[1] for _ in range(cfg.cipo.M)]
    lengths = [len(t) + 1 for t in ["1234", "1234", "9876", "11"]]
    lengths += [len(t) + 1 for r in fake.requests[1] for t in fake.continuations[(r.task.id, "".join(map(chr, r.prefix)))]]
    assert len(ro.rows) == len(prefixes) == 4 + cfg.cipo.C * cfg.cipo.M
    want = np.zeros((N, T))
    for n, (prefix, length) in enumerate(zip(prefixes, lengths)):
        want[n, 2 + len(prefix):2 + len(prefix) + length] = 1.0
    np.testing.assert_array_equal(packed["completion_mask"], want)

    rng = np.random.default_rng(2)
    logits = rng.normal(size=(N, T, 256)) * 1.5
    tokens = packed["tokens"]
    ref_batch = {**packed, "tokens": tokens, "completion_mask": want, "ref_logp": np.zeros((N, T))}
    loss_cfg = LossConfig(alpha_corr=0.7, gamma_nll=0.3)
    logp, ent = token_logprobs(jnp.asarray(logits, jnp.float32), jnp.asarray(tokens))
    jb = LossBatch.create(**{**packed, "tokens": tokens})
    got, metrics = cipo_loss(logp, ent, jb, loss_normalisers(jb, loss_cfg), loss_cfg)
    want_loss, want_metrics = ref.cipo_loss(*ref.token_logprobs(logits, tokens), ref_batch, asdict(loss_cfg))
    assert float(got) == pytest.approx(want_loss, abs=1e-5)
    for key in ("loss_corr", "loss_nll"):
        assert float(metrics[key]) == pytest.approx(want_metrics[key], abs=1e-5)
    assert want_metrics["loss_nll"] != 0.0  # a fix is in the batch, so the NLL term is exercised

    # Logits at the prompt and prefix positions predict no counted token: bumping them changes nothing.
    bumped = logits.copy()
    for n, r in enumerate(ro.rows):
        bumped[n, :len(r.prompt) - 1] += 5.0 * rng.normal(size=(len(r.prompt) - 1, 256))
    logp2, ent2 = token_logprobs(jnp.asarray(bumped, jnp.float32), jnp.asarray(tokens))
    got2, _ = cipo_loss(logp2, ent2, jb, loss_normalisers(jb, loss_cfg), loss_cfg)
    assert float(got2) == pytest.approx(float(got), abs=1e-6)


def test_feedback_goes_to_failed_sources_only():
    class Fake(FakeContinuer):
        def sample(self, requests, n, seed_offset):
            self.requests.append(requests)
            texts = [("11" if r.attempt is None and r.task.id == "t1" else "5") for r in requests for _ in range(n)]
            toks = [ids(t) + [STOP] for t in texts]
            return Samples([[1]] * len(requests), toks, [[-0.5] * len(t) for t in toks], ["stop"] * len(toks), texts)

    explained = []

    def explain(tasks, texts):
        explained.append(list(texts))
        return [f"why {t.id}" for t in tasks]

    fake = Fake({}, {})
    cfg = load_config(None, ["cipo.feedback=true", "grpo.group_size=2", "cipo.C=2", "cipo.M=1",
                             "cipo.rho_init=0.5", "cipo.rho_max=0.5"])
    collect(fake.sample, fake.score, [task(0), task(1)], cfg, ReplayState.initial(cfg), np.random.default_rng(0),
            explain_fn=explain)
    feedback = {r.task.id: r.feedback for r in fake.requests[1]}
    assert feedback.get("t0") == "why t0" and feedback.get("t1", "") == ""  # t1's attempts succeed
    assert explained == [["5"]]
    with pytest.raises(ValueError, match="cipo.feedback needs an explain_fn"):
        collect(fake.sample, fake.score, [task(0)], cfg, ReplayState.initial(cfg), np.random.default_rng(0))


def test_feedback_and_prefix_render(tmp_path):
    from cipo_jax.cipo.template import render, render_correction
    from cipo_jax.data.spm_train import train_sentencepiece
    from cipo_jax.data.tokenizer import load_tokenizer

    tok = load_tokenizer(f"sp:{train_sentencepiece(['Q: 1+2 = 3 4 Feedback: wrong answer Review.'] * 50, 64, tmp_path / 'm')}")
    t = Task(id="a", prompt="Q: 1+2 =", messages=None, reference="3", verifier="exact")
    assert correction_turn("Review.", "") == "Review."
    with_fb = render(Request(t, attempt=" 4", feedback="wrong answer"), tok, chat=False, template="Review.")
    assert tok.decode(with_fb).endswith("Review.\nFeedback: wrong answer\nQ: 1+2 =")
    assert with_fb == render_correction(t, " 4", tok, chat=False, template="Review.\nFeedback: wrong answer")
    cont = render(Request(t, prefix=(7, 8)), tok, chat=False, template="Review.")
    assert cont == tok.encode("Q: 1+2 =", add_bos=tok.add_bos) + [7, 8]
    with pytest.raises(ValueError, match="not both"):
        Request(t, attempt="x", prefix=(1,))


def test_config_rejects_bad_construction_and_fraction():
    from cipo_jax.configlib import ConfigError

    with pytest.raises(ConfigError, match="construction"):
        load_config(None, ["cipo.construction=splice"])
    with pytest.raises(ConfigError, match="prefix_fraction must lie in"):
        load_config(None, ["cipo.prefix_fraction=1.0"])


@pytest.mark.slow
def test_prefix_construction_trains_a_few_steps(tmp_path):
    from cipo_jax.train.trainer import train

    run_dir = tmp_path / "run"
    cfg = load_config("configs/tiny.yaml", [
        f"run.run_dir={run_dir}", "run.steps=3", "run.log_tensorboard=false", "sft.steps=20", "tasks.size=128",
        "tasks.spec=arith:digits=1,operands=3,ops=+", "grpo.num_prompts=4", "grpo.group_size=4",
        "cipo.C=4", "cipo.M=2", "cipo.construction=prefix", "cipo.prefix_fraction=0.5",
        "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1"])
    train(cfg, progress_bar=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["corr_count"] > 0 for r in rows)  # the correction stream was trained every step
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["loss_corr"]) for r in rows)
