"""cipo_jax.cipo.correction against hand-worked cases, brute-force enumeration and plain loops."""

import itertools
import json
from collections import Counter

import numpy as np
import pytest

import numpy_reference as ref
from cipo_jax.cipo.correction import (
    ReplayState, correction_advantages, correction_group_ids, correction_metrics, nll_weights, priority,
    retention_counts, select_sources, stochastic_round, update_replay,
)
from cipo_jax.config import CIPOConfig, load_config

# eta_rho 0.1, kappa* 0.9, EMA decay 0.9, rho in [0, 0.5], rho_init 0.25 (the defaults, spelled out).
CFG = CIPOConfig(eta_rho=0.1, kappa_star=0.9, retention_ema=0.9, rho_min=0.0, rho_max=0.5, rho_init=0.25)


def test_priority_hand_values():
    # p = 0.5: 0.25 + 0.05 = 0.3; p = 0: 0 + 0.05; p = 1: 0 + 0.05; p = 0.25: 0.1875 + 0.05 = 0.2375.
    np.testing.assert_allclose(priority(np.array([0.5, 0.0, 1.0, 0.25]), 0.05), [0.3, 0.05, 0.05, 0.2375])
    with pytest.raises(ValueError, match="pass rates must lie in"):
        priority(np.array([1.5]), 0.05)


def test_uniform_priority_and_unknown_rules():
    np.testing.assert_array_equal(priority(np.array([0.5, 0.0, 1.0]), 0.05, "uniform"), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="unknown rule 'flat'; known: uniform, variance"):
        priority(np.array([0.5]), 0.05, "flat")
    assert load_config(None, ["cipo.priority=uniform"]).cipo.priority == "uniform"
    with pytest.raises(ValueError, match="cipo.priority"):
        load_config(None, ["cipo.priority=flat"])


def test_slot_split_rounding_and_shortage():
    rng = np.random.default_rng(0)
    rewards = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], float)  # 6 successes, 6 failures
    # C = 5, rho = 0.4: rho C = 2 exactly -> 2 success slots, 3 failure slots.
    src = select_sources(rewards, C=5, rho=0.4, eta=0.05, rng=rng)
    kinds = [rewards[b, i] for b, i in src]
    assert len(set(src)) == 5 and kinds == [0, 0, 0, 1, 1]
    # All failures, C = 3, rho = 0.5: 1 or 2 success slots find no success -> 3 failures.
    assert len(select_sources(np.zeros((2, 2)), C=3, rho=0.5, eta=0.05, rng=rng)) == 3
    # Two failures only, C = 5, rho = 0.2: 1 success slot, 4 failure slots of which 2 are filled;
    # the 2 unused failure slots go to successes -> 2 failures + 3 successes.
    two_fail = np.array([[1, 1, 0], [1, 0, 1]], float)
    assert sorted(two_fail[b, i] for b, i in select_sources(two_fail, C=5, rho=0.2, eta=0.05, rng=rng)) == [0, 0, 1, 1, 1]
    # Budget above the number of rollouts: every rollout once.
    assert sorted(select_sources(two_fail, C=50, rho=0.2, eta=0.05, rng=rng)) == [(b, i) for b in range(2) for i in range(3)]
    assert select_sources(rewards, C=0, rho=0.4, eta=0.05, rng=rng) == []
    with pytest.raises(ValueError, match="rho must lie in"):
        select_sources(rewards, C=2, rho=1.5, eta=0.05, rng=rng)
    with pytest.raises(ValueError, match=r"rewards must be \(B, G\)"):
        select_sources(rewards[0], C=2, rho=0.5, eta=0.05, rng=rng)


def test_priority_sampling_hand_case():
    """Prompt 0 = (success, failure): p = 0.5, w = 0.3. Prompt 1 = (failure, failure): p = 0, w = 0.05.
    Failures: (0,1) w .3, (1,0) w .05, (1,1) w .05; total W = .4.
    C = 1: P(0,1) = .3/.4 = .75, P(1,0) = P(1,1) = .05/.4 = .125.
    C = 2 (successive draws without replacement):
      P{(1,0),(1,1)} = 2 * .125 * (.05/.35) = 1/28 ~= .035714
      P{(0,1),(1,0)} = .75 * (.05/.10) + .125 * (.3/.35) = .375 + .107143 = .482143 = P{(0,1),(1,1)}."""
    rewards = np.array([[1, 0], [0, 0]], float)
    rng = np.random.default_rng(1)
    n = 40_000
    one = Counter(select_sources(rewards, C=1, rho=0.0, eta=0.05, rng=rng)[0] for _ in range(n))
    two = Counter(frozenset(select_sources(rewards, C=2, rho=0.0, eta=0.05, rng=rng)) for _ in range(n))
    tol = 4 * np.sqrt(0.25 / n)  # 4 binomial standard deviations at worst (p = 1/2)
    for key, p in {(0, 1): 0.75, (1, 0): 0.125, (1, 1): 0.125}.items():
        assert abs(one[key] / n - p) < tol, key
    for key, p in {((1, 0), (1, 1)): 1 / 28, ((0, 1), (1, 0)): 0.482143, ((0, 1), (1, 1)): 0.482143}.items():
        assert abs(two[frozenset(key)] / n - p) < tol, key


def successive_sampling_probabilities(weights: dict, k: int) -> dict:
    """Brute force: P(set) = sum over its orderings of prod_j w_j / (W - weights drawn before)."""
    probs = {}
    for subset in itertools.combinations(weights, k):
        total = 0.0
        for order in itertools.permutations(subset):
            p, left = 1.0, sum(weights.values())
            for item in order:
                p *= weights[item] / left
                left -= weights[item]
            total += p
        probs[frozenset(subset)] = total
    return probs


@pytest.mark.parametrize("rule", ["variance", "uniform"])
def test_priority_sampling_matches_brute_force_enumeration(rule):
    """Successes of three prompts with pass rates 1/4, 3/4, 1 (variance: w = .2375, .2375, .05;
    uniform: all 1) and failures of pass rates 1/4, 3/4 (three and one of them): draw 2 + 3."""
    rewards = np.array([[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], float)
    w = priority(np.array([0.25, 0.75, 1.0]), 0.05, rule)
    succ = {(b, i): w[b] for b in range(3) for i in range(4) if rewards[b, i] == 1}
    fail = {(b, i): w[b] for b in range(3) for i in range(4) if rewards[b, i] == 0}
    want_succ = successive_sampling_probabilities(succ, 2)
    want_fail = successive_sampling_probabilities(fail, 3)
    rng = np.random.default_rng(2)
    n = 20_000
    got_succ, got_fail = Counter(), Counter()
    for _ in range(n):
        src = select_sources(rewards, C=5, rho=0.4, eta=0.05, rng=rng, priority_rule=rule)
        got_fail[frozenset(src[:3])] += 1
        got_succ[frozenset(src[3:])] += 1
    tol = 4 * np.sqrt(0.25 / n)
    for want, got in ((want_succ, got_succ), (want_fail, got_fail)):
        assert abs(sum(want.values()) - 1.0) < 1e-12
        assert set(got) <= set(want)
        for key, p in want.items():
            assert abs(got[key] / n - p) < tol, (key, p, got[key] / n)


def test_zero_priority_items_come_last():
    # eta = 0: the all-success prompt has w = 0, so one success slot goes to prompt 0's success.
    rewards = np.array([[1, 0], [1, 1]], float)
    for seed in range(20):
        src = select_sources(rewards, C=2, rho=0.5, eta=0.0, rng=np.random.default_rng(seed))
        assert src == [(0, 1), (0, 0)]


def test_stochastic_round_expectation():
    rng = np.random.default_rng(5)
    n = 40_000
    for x in (0.0, 0.4, 1.0, 2.75):
        draws = np.array([stochastic_round(x, rng) for _ in range(n)])
        assert set(draws) <= {int(np.floor(x)), int(np.floor(x)) + 1}
        assert abs(draws.mean() - x) < 4 * 0.5 / np.sqrt(n), x
    with pytest.raises(ValueError, match="x >= 0"):
        stochastic_round(-0.1, rng)


def test_success_slots_follow_rho_c_in_expectation():
    # C = 4, rho = 0.1: rho C = 0.4, and round-half-up gave 0 success slots every time; now 1 slot 40%
    # of the time (6 failures fill the other slots).
    rewards = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], float)
    rng = np.random.default_rng(6)
    n = 20_000
    succ = [sum(rewards[b, i] for b, i in select_sources(rewards, C=4, rho=0.1, eta=0.05, rng=rng)) for _ in range(n)]
    assert set(succ) == {0, 1}
    assert abs(np.mean(succ) - 0.4) < 4 * np.sqrt(0.24 / n)


def test_replay_controller_leaves_a_small_rho():
    """rho_0 C = 0.08 < 1/2: under round-half-up no success is ever corrected, retention is never
    observed and rho stays at 0.01 forever. Every correction of a success breaks here (kappa = 0
    < kappa*), so each observation raises rho by eta_rho (kappa* - ema) until it reaches rho_max."""
    rewards = np.array([[1, 0, 1, 0], [1, 1, 0, 0]], float)
    rng = np.random.default_rng(7)
    state = ReplayState(rho=0.01)
    for _ in range(400):
        src = select_sources(rewards, C=8, rho=state.rho, eta=0.05, rng=rng)
        r_src = np.array([rewards[b, i] for b, i in src])
        kept, total = retention_counts(np.zeros((len(src), 2)), r_src)
        state = update_replay(state, kept, total, CFG)
    assert state.kappa_ema == pytest.approx(0.0) and state.rho == pytest.approx(CFG.rho_max)


def test_correction_advantages_hand_case():
    # eps = 1e-6 (the default) moves the z-scores by ~2e-6. r' per source, M = 2. Source 0 (correct): r' = (1, 0) -> z = (1, -1), the broken one -lambda.
    # Source 1 (failed): r' = (0, 1) -> (-1, 1), no penalty. Source 2 (correct, both break): r' =
    # (0, 0) -> z = (0, 0), then -lambda each: the case the penalty exists for.
    r_corr = np.array([[1, 0], [0, 1], [0, 0]], float)
    r_src = np.array([1, 0, 1], float)
    per_source = np.arange(3)
    np.testing.assert_allclose(correction_advantages(r_corr, r_src, per_source, lambda_risk=1.0),
                               [[1, -2], [-1, 1], [-1, -1]], atol=1e-5)
    np.testing.assert_allclose(correction_advantages(r_corr, r_src, per_source, lambda_risk=0.5),
                               [[1, -1.5], [-1, 1], [-0.5, -0.5]], atol=1e-5)
    # Grouped by prompt (sources 0 and 1 of prompt 7, source 2 of prompt 9): r' = (1, 0, 0, 1):
    # mean 1/2, std 1/2 -> (1, -1, -1, 1); prompt 9 alone -> (0, 0); then the penalty.
    by_prompt = np.array([7, 7, 9])
    np.testing.assert_allclose(correction_advantages(r_corr, r_src, by_prompt, lambda_risk=1.0),
                               [[1, -2], [-1, 1], [-1, -1]], atol=1e-5)
    # Dr.GRPO (centre only): source 0 -> (.5, -.5) then -1 on the broken one.
    np.testing.assert_allclose(
        correction_advantages(r_corr, r_src, per_source, lambda_risk=1.0, std_normalize=False),
        [[0.5, -1.5], [-0.5, 0.5], [-1, -1]])
    with pytest.raises(ValueError, match="lambda_risk must be >= 0"):
        correction_advantages(r_corr, r_src, per_source, lambda_risk=-1.0)


@pytest.mark.parametrize("std_normalize", [True, False])
@pytest.mark.parametrize("group_by", ["source", "prompt"])
def test_correction_advantages_match_plain_loop(std_normalize, group_by):
    rng = np.random.default_rng(3)
    sources = [(int(b), int(i)) for b, i in zip(rng.integers(0, 4, 9), rng.integers(0, 8, 9))]
    r_corr = rng.integers(0, 2, (9, 4)).astype(float)
    r_src = rng.integers(0, 2, 9).astype(float)
    ids = correction_group_ids(sources, group_by)
    plain = correction_advantages(r_corr, r_src, ids, lambda_risk=0.0, std_normalize=std_normalize)
    for lam in (0.0, 1.0, 5.0):
        got = correction_advantages(r_corr, r_src, ids, lambda_risk=lam, std_normalize=std_normalize)
        np.testing.assert_allclose(got, ref.correction_advantages(r_corr, r_src, ids, lam, std_normalize), atol=1e-12)
        # lambda moves only the broken corrections of correct sources, each by exactly -lambda.
        broke = (r_src[:, None] == 1) & (r_corr == 0)
        np.testing.assert_allclose(got[~broke], plain[~broke], atol=1e-12)
        np.testing.assert_allclose(got[broke], plain[broke] - lam, atol=1e-12)
    assert correction_advantages(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), lambda_risk=1.0).shape == (0, 4)
    with pytest.raises(ValueError, match="unknown group_by"):
        correction_group_ids(sources, "batch")


def test_risk_penalty_does_not_cancel():
    """The defect this guards against: a penalty added before a per-source z-score cancels, so
    lambda = 0, 1, 5 gave identical advantages and an all-broken correct source got 0."""
    r_corr, r_src, ids = np.array([[0.0, 0.0, 0.0]]), np.array([1.0]), np.array([0])
    advs = [correction_advantages(r_corr, r_src, ids, lambda_risk=lam) for lam in (0.0, 1.0, 5.0)]
    np.testing.assert_allclose(advs[0], 0.0)
    np.testing.assert_allclose(advs[1], -1.0)
    np.testing.assert_allclose(advs[2], -5.0)


def test_nll_weights_and_retention_counts_hand_case():
    # Sources: failed, correct, correct. Corrections (M = 3):
    r_source = np.array([0, 1, 1], float)
    r_corr = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1]], float)
    # L_nll rows: successful corrections of the failed source only -> row 0 cells 0 and 2.
    np.testing.assert_array_equal(nll_weights(r_corr, r_source), [[1, 0, 1], [0, 0, 0], [0, 0, 0]])
    # Retention: of the 6 corrections of correct sources, 2 + 1 = 3 stay correct.
    assert retention_counts(r_corr, r_source) == (3, 6)


def test_update_replay_hand_sequence():
    s = ReplayState.initial(CFG)
    assert (s.rho, s.kappa_ema) == (0.25, None)
    # Step 1: 3 of 4 kept -> kappa = .75 initialises the EMA; rho = .25 + .1 (.9 - .75) = .265.
    s = update_replay(s, 3, 4, CFG)
    assert s.kappa_ema == pytest.approx(0.75) and s.rho == pytest.approx(0.265)
    # Step 2: 0 of 2 kept -> EMA = .9 * .75 + .1 * 0 = .675; rho = .265 + .1 (.9 - .675) = .2875.
    s = update_replay(s, 0, 2, CFG)
    assert s.kappa_ema == pytest.approx(0.675) and s.rho == pytest.approx(0.2875)
    # Step 3: no corrections of successful sources -> unchanged.
    assert update_replay(s, 0, 0, CFG) == s
    # Clipping: .49 + .1 (.9 - 0) = .58 -> rho_max .5; .005 + .1 (.9 - 1) = -.005 -> rho_min 0.
    assert update_replay(ReplayState(rho=0.49), 0, 1, CFG).rho == 0.5
    assert update_replay(ReplayState(rho=0.005), 1, 1, CFG).rho == 0.0
    # The whole run config is accepted as well as its cipo section.
    full = load_config(None, [])
    assert update_replay(ReplayState(0.25), 3, 4, full) == update_replay(ReplayState(0.25), 3, 4, full.cipo)
    with pytest.raises(ValueError, match="0 <= kept_correct <= total"):
        update_replay(s, 5, 4, CFG)


def test_eta_rho_zero_fixes_rho():
    """eta_rho = 0 is the fixed-rho ablation: the retention EMA still moves, rho stays at rho_init."""
    fixed = CIPOConfig(eta_rho=0.0, rho_init=0.25)
    state = ReplayState.initial(fixed)
    for kept, total in ((0, 4), (4, 4), (1, 3), (0, 0), (2, 2)):
        state = update_replay(state, kept, total, fixed)
        assert state.rho == 0.25
    assert state.kappa_ema == pytest.approx(0.9 * (0.9 * (0.9 * 0.0 + 0.1 * 1.0) + 0.1 / 3) + 0.1)


def test_replay_state_round_trips_through_json():
    for s in (ReplayState(rho=0.3), ReplayState(rho=0.3125, kappa_ema=0.8)):
        assert ReplayState.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match="expected keys rho, kappa_ema"):
        ReplayState.from_dict({"rho": 0.2, "kappa": 0.5})


def test_correction_metrics_hand_case():
    r_source = np.array([0, 1, 1], float)
    r_corr = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1]], float)
    m = correction_metrics(r_corr, r_source, ReplayState(rho=0.3, kappa_ema=0.6))
    # 9 corrections, 5 correct; failed source: 2 of 3 fixed; retention 3 of 6 (see above).
    assert m == {"corr_count": 9.0, "corr_success": 5 / 9, "corr_fix_rate": 2 / 3, "retention": 0.5,
                 "retention_ema": 0.6, "replay_ratio": 0.3}
    empty = correction_metrics(np.zeros((0, 3)), np.zeros(0), ReplayState(rho=0.3))
    assert empty["corr_count"] == 0.0 and np.isnan(empty["retention"]) and np.isnan(empty["corr_success"])
