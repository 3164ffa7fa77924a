"""`compare`: the arms, the equal-token-budget bookkeeping, the report and the resume cache
against hand-worked cases; end to end, a tiny three-arm, two-seed ablation whose paired CIs and
power figure are recomputed here from the per-seed rows with an independent NumPy bootstrap, and
which, killed and rerun, redoes only the work that had not finished."""

import json
import math
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cipo_jax.config import load_config
from cipo_jax.evaluation.compare import (
    ARMS, arm_overrides, baseline_of, budget_step, cached_evaluate, compare_view, link_finished_run, markdown_report,
    parse_arms, progress_line, run_row, window_mean,
)


def test_budget_step_is_first_step_reaching_budget():
    cum = np.cumsum([100, 100, 150, 50])  # 100, 200, 350, 400
    assert budget_step(cum, 100) == 0
    assert budget_step(cum, 201) == 2
    assert budget_step(cum, 400) == 3
    with pytest.raises(ValueError, match="never reaches the token budget"):
        budget_step(cum, 401)


def test_window_mean_skips_missing_and_clips_at_start():
    values = [1.0, None, 3.0, 5.0, 7.0]
    assert window_mean(values, 4, 2) == 6.0
    assert window_mean(values, 2, 5) == 2.0  # (1 + 3) / 2, the None skipped
    assert math.isnan(window_mean([None, None], 1, 2))


def test_arms_parse_and_name_the_baseline():
    assert parse_arms("grpo, cipo,cipo-no-nll") == ["grpo", "cipo", "cipo-no-nll"]
    assert baseline_of(["cipo", "cipo-no-nll", "grpo"]) == "grpo"
    assert baseline_of(["cipo", "cipo-uniform"]) == "cipo"
    with pytest.raises(ValueError, match="unknown arm 'cipo-fast'; valid arms: grpo, cipo, cipo-no-nll"):
        parse_arms("grpo,cipo-fast")
    for bad in ("grpo", "cipo,cipo"):
        with pytest.raises(ValueError, match="at least two distinct arms"):
            parse_arms(bad)


def test_arm_presets_set_their_config_keys():
    """Each arm differs from the config's CIPO in exactly the setting it names; the user's
    overrides apply to every arm except where the arm sets the same key."""
    want = {"grpo": ("C", 0), "cipo-no-nll": ("gamma_nll", 0.0), "cipo-no-pg": ("alpha_corr", 0.0),
            "cipo-no-risk": ("lambda_risk", 0.0), "cipo-fixed-rho": ("eta_rho", 0.0),
            "cipo-uniform": ("priority", "uniform")}
    user = ["cipo.C=2", "optim.lr=1e-3"]
    base = load_config("configs/tiny.yaml", user)
    assert set(ARMS) == {"cipo", *want}
    for arm in ARMS:
        cfg = load_config("configs/tiny.yaml", arm_overrides(user, arm))
        assert cfg.optim.lr == 1e-3
        changed = {k: v for k, v in vars(cfg.cipo).items() if v != getattr(base.cipo, k)}
        assert changed == (dict([want[arm]]) if arm in want else {}), arm
    assert arm_overrides(user, "grpo") == ["optim.lr=1e-3", "cipo.C=0"]


def test_progress_line_eta_from_runs_that_did_work():
    # 120 s for 2 runs trained here (a third was reused): 60 s each, 3 left -> 3 min.
    assert progress_line(3, 6, 120.0, 2) == "[compare] 3/6 runs done, 2m00s elapsed, ETA 3m00s"
    assert progress_line(2, 6, 1.0, 0) == "[compare] 2/6 runs done, 0m01s elapsed, ETA ?"
    assert progress_line(1, 2, 7322.0, 1).endswith("2h02m02s elapsed, ETA 2h02m02s")


def test_cached_evaluate_runs_once_per_checkpoint_and_settings(tmp_path):
    calls = []

    def evaluate(run_dir, **kw):
        calls.append(kw)
        return {"step": kw["step"], "value": len(calls)}

    first, ran = cached_evaluate(tmp_path, 3, evaluate, n=4, size=16, seed=1)
    assert ran and first == {"step": 3, "value": 1} and calls == [{"step": 3, "n": 4, "size": 16, "seed": 1}]
    assert cached_evaluate(tmp_path, 3, evaluate, n=4, size=16, seed=1) == (first, False)
    assert cached_evaluate(tmp_path, 3, evaluate, n=8, size=16, seed=1)[1]  # another n: evaluated again
    assert len(calls) == 2 and not list(tmp_path.rglob("*.tmp"))


def _fake_result(correct, n, t1, t2, step):
    """An evaluation result as evaluate_policy writes it, from per-problem outcomes."""
    from cipo_jax.evaluation.evaluate import per_problem_metrics
    from cipo_jax.stats import mean_se

    ks = [2 ** i for i in range(int(math.log2(n)) + 1)]
    result = {"step": step, "per_problem": {"correct": correct, "n": n, "t1": t1, "t2": t2},
              "pass_at_k": dict.fromkeys(map(str, ks))}
    per = per_problem_metrics(result)
    result["pass_at_k"] = {str(k): float(per[f"pass@{k}"].mean()) for k in ks}
    result["pass_at_k_se"] = {str(k): mean_se(per[f"pass@{k}"])[1] for k in ks}
    keys = ("acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i")
    result["self_correction"] = {key: float(per[key].mean()) for key in keys}
    result["self_correction_se"] = {key: mean_se(per[key])[1] for key in keys}
    return result


def test_report_from_hand_worked_rows():
    """Two seeds x three problems, n = 2. GRPO solves problem 0 once per seed; CIPO adds a second
    solve of problem 1: pass@1 0.5/3 vs 1/3, paired difference 1/6 at both seeds."""
    metrics = [{"step": s, "tokens": t, "reward_mean": r, "step_time": 2.0}
               for s, t, r in ((1, 10, 0.0), (2, 10, 0.5), (3, 20, 1.0))]
    rows = {"grpo": [], "cipo": []}
    for seed in (0, 1):
        rows["grpo"].append(run_row(seed, _fake_result([1, 0, 0], 2, [1, 0, 0], [1, 0, 0], 3), metrics, 2, 2))
        rows["cipo"].append(run_row(seed, _fake_result([1, 1, 0], 2, [1, 0, 0], [1, 1, 0], 2), metrics, 1, 2))
    g = rows["grpo"][0]
    assert (g["step"], g["eval_step"], g["tokens"], g["wall_s"], g["train_reward"]) == (3, 3, 40.0, 6.0, 0.75)
    assert g["pass@1"] == pytest.approx(1 / 6) and g["pass@2"] == pytest.approx(1 / 3)
    assert rows["cipo"][0]["train_reward"] == 0.25 and rows["cipo"][0]["tokens"] == 20.0
    view = compare_view(rows, "grpo")
    assert view["summary"]["cipo"]["pass@1"] == {"mean": pytest.approx(1 / 3), "se": 0.0}
    p = view["paired"]["cipo"]
    assert p["pass@1"]["diff"] == pytest.approx(1 / 6) and p["delta_i2c"]["diff"] == pytest.approx(1 / 3)
    assert p["tokens"] == {"diff": -20.0, "ci95": [-20.0, -20.0], "se": 0.0}
    assert view["pass_at_k"]["grpo"] == {"k": [1, 2], "mean": [pytest.approx(1 / 6), pytest.approx(1 / 3)],
                                         "se": [0.0, 0.0]}
    # per-problem pass@1 differences (0, 1/2, 0) at both seeds: a problem effect shared by the seeds,
    # variance 1/12, no seed or residual variance; the SE is that of a mean over the 3 problems
    power = view["power"]["cipo"]
    assert power["var_seed"] == 0.0 and power["var_problem"] == pytest.approx(1 / 12)
    assert power["var_residual"] == pytest.approx(0.0, abs=1e-15)
    assert power["mdd"] == pytest.approx(2.801585 * math.sqrt(1 / 12 / 3), rel=1e-6)
    md = markdown_report({"equal_steps": view}, "grpo", 40.0)
    assert "| metric | grpo | cipo | cipo − grpo [95% CI] |" in md
    assert "| held-out pass@1 | 0.167 ± 0.000 | 0.333 ± 0.000 | +0.167 [" in md
    assert "| generated tokens | 40 ± 0 | 20 ± 0 | -20 [-20, -20] |" in md
    assert "with 2 seeds x 3 problems: cipo vs grpo: 0.467" in md


# ------------------------------------------------------------------------------ end to end
TINY = ["sft.steps=60", "sft.batch_size=32", "tasks.spec=arith:digits=1,operands=3,ops=+", "tasks.size=200",
        "tasks.eval_size=16", "sampling.max_new_tokens=4", "grpo.num_prompts=8", "grpo.group_size=4", "cipo.C=8",
        "cipo.M=8", "optim.lr=1e-2", "optim.warmup_steps=0", "model.hidden_size=32", "model.intermediate_size=64",
        "model.num_layers=1", "run.ckpt_every=1", "run.keep_checkpoints=10", "run.log_tensorboard=false"]
ARGS = ["compare", "--config", "configs/tiny.yaml", "--arms", "grpo,cipo,cipo-no-nll", "--seeds", "2", "--steps", "2",
        "--n", "4", "--window", "2", "--no-progress", *TINY]


def _pass_at_k(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _per_problem(row, key):
    """A held-out metric per problem, from the row's raw outcomes (not through cipo_jax)."""
    pp = row["per_problem"]
    t1, t2 = np.array(pp["t1"], bool), np.array(pp["t2"], bool)
    if key.startswith("pass@"):
        return np.array([_pass_at_k(pp["n"], c, int(key[5:])) for c in pp["correct"]])
    return {"acc_t1": t1, "acc_t2": t2, "delta": t2.astype(float) - t1, "delta_i2c": ~t1 & t2,
            "delta_c2i": t1 & ~t2}[key].astype(float)


def _crossed_means(d, resamples, rng):
    """Bootstrap means of d (seeds, problems), crossed: draw seeds with replacement and, once for
    all of them, problems with replacement."""
    S, P = d.shape
    out = np.empty(resamples)
    for r in range(resamples):
        out[r] = d[rng.choice(S, S)][:, rng.choice(P, P)].mean()
    return out


def _crossed_mdd(d):
    """(z_0.975 + z_0.8) x SE of the mean of d (seeds, problems) from the two-way ANOVA variance
    components: var_seed / S + var_problem / P + var_residual / (S P)."""
    S, P = d.shape
    resid = d - d.mean(axis=1, keepdims=True) - d.mean(axis=0, keepdims=True) + d.mean()
    ms_res = (resid ** 2).sum() / ((S - 1) * (P - 1))
    var_seed = max(0.0, (P * d.mean(axis=1).var(ddof=1) - ms_res) / P)
    var_problem = max(0.0, (S * d.mean(axis=0).var(ddof=1) - ms_res) / S)
    return 2.801585 * math.sqrt(var_seed / S + var_problem / P + ms_res / (S * P))


def _check_ci(ci, means, level=0.95, tol=0.015):
    """Each end of the reported interval sits at its quantile of our bootstrap distribution, up
    to Monte-Carlo error and the atom of mass at that point."""
    means = np.sort(means)
    for end, q in zip(ci, ((1 - level) / 2, (1 + level) / 2)):
        assert np.searchsorted(means, end + 1e-12, side="right") / means.size >= q - tol, (ci, q)
        assert np.searchsorted(means, end - 1e-9, side="right") / means.size <= q + tol, (ci, q)


def _check_report(report):
    arms, base = ["grpo", "cipo", "cipo-no-nll"], report["baseline"]
    assert base == "grpo" and list(report["arms"]) == arms and report["arms"]["grpo"] == ["cipo.C=0"]
    rng, widths = np.random.default_rng(123), []
    for name in ("equal_steps", "equal_tokens"):
        view = report[name]
        rows = view["per_seed"]
        assert all([r["seed"] for r in rows[arm]] == [0, 1] for arm in arms)
        keys = [f"pass@{k}" for k in (1, 2, 4)] + ["acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i"]
        for arm in arms:
            for row in rows[arm]:
                for key in keys:  # every reported metric is the mean of its per-problem values
                    assert row[key] == pytest.approx(_per_problem(row, key).mean())
                    assert row["se"][key] == pytest.approx(statistics.stdev(_per_problem(row, key)) / 4)
            for key in keys + ["train_reward", "tokens"]:
                values = [r[key] for r in rows[arm]]
                assert view["summary"][arm][key]["mean"] == pytest.approx(statistics.fmean(values))
                assert view["summary"][arm][key]["se"] == pytest.approx(statistics.stdev(values) / math.sqrt(2))
            assert view["pass_at_k"][arm]["k"] == [1, 2, 4]
        for arm in ("cipo", "cipo-no-nll"):
            for key in keys:
                d = np.stack([_per_problem(a, key) - _per_problem(b, key) for a, b in zip(rows[arm], rows[base])])
                got = view["paired"][arm][key]
                assert got["diff"] == pytest.approx(d.mean(), abs=1e-12)
                _check_ci(got["ci95"], _crossed_means(d, 4000, rng))
                widths.append(got["ci95"][1] - got["ci95"][0])
            d = np.stack([_per_problem(a, "pass@1") - _per_problem(b, "pass@1") for a, b in zip(rows[arm], rows[base])])
            assert view["power"][arm]["mdd"] == pytest.approx(_crossed_mdd(d), rel=1e-5)
    assert max(widths) > 0, "every paired difference was exactly zero: the check above proved nothing"
    for row in report["equal_tokens"]["per_seed"]["cipo"]:  # CIPO reaches GRPO's budget earlier
        assert row["tokens"] >= report["token_budget"] and row["eval_step"] <= row["step"]


def _compare(out: Path, cache: Path, *extra: str) -> subprocess.Popen:
    """`python -m cipo_jax compare ARGS --out out [extra]` in its own process group, on one CPU device,
    with a persistent compilation cache that later runs and invocations reuse (compiling is most
    of a tiny run's time)."""
    env = {**os.environ, "XLA_FLAGS": "", "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    return subprocess.Popen([sys.executable, "-m", "cipo_jax", *ARGS, "--out", str(out), *extra], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen) -> str:
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-3000:]
    return log


def _files(out: Path) -> dict[str, int]:
    """Every file the runs hold (not the report), with its modification time."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and p.parent != out}


@pytest.mark.slow
def test_compare_ablation_recomputes_and_resumes(tmp_path):
    """Killed as the last run starts; rerun: trains only that run and evaluates only checkpoints
    not evaluated before; rerun again: changes no file and writes the same report."""
    out, cache, last = tmp_path / "cmp", tmp_path / "jax-cache", "cipo-no-nll-seed1"
    proc = _compare(out, cache)
    for line in proc.stdout:
        if line.startswith("[compare] cipo-no-nll seed 1 -> "):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "compare.json").exists()
    done = [f"{arm}-seed{s}" for s in (0, 1) for arm in ("grpo", "cipo", "cipo-no-nll")][:-1]
    before = _files(out)
    assert {f for f in before if "/evals/" in f} == {f"{run}/evals/step2-n4-size16-seed{run[-1]}.json" for run in done}

    log = _finish(_compare(out, cache))
    assert [line for line in log.splitlines() if " seed " in line and " -> " in line] == \
        [f"[compare] cipo-no-nll seed 1 -> {out / last}"]
    after = _files(out)
    changed = {f for f in after if before.get(f) != after[f]}
    assert f"{last}/evals/step2-n4-size16-seed1.json" in changed
    assert any(f.startswith(f"{last}/checkpoints/2/") for f in changed)  # trained to the end
    others = {f for f in changed if not f.startswith(f"{last}/")}
    assert all("/evals/step1-" in f and f not in before for f in others), others  # only the budget evaluations
    report = json.loads((out / "compare.json").read_text())
    _check_report(report)
    assert any(r["eval_step"] == 1 for r in report["equal_tokens"]["per_seed"]["cipo"])
    assert (out / "compare.png").stat().st_size > 0
    md = (out / "compare.md").read_text()
    assert "Equal steps" in md and "Equal generated-token budget" in md and "80% power" in md

    _finish(_compare(out, cache))
    assert _files(out) == after
    again = json.loads((out / "compare.json").read_text())
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in report.items() if k != "seconds"}
    cipo_cfg = (out / "cipo-seed0" / "config.yaml").read_text()
    grpo_cfg = (out / "grpo-seed0" / "config.yaml").read_text()
    diff = {a for a, b in zip(cipo_cfg.splitlines(), grpo_cfg.splitlines()) if a != b}
    assert all("C:" in line or "run_dir" in line for line in diff), diff

    # --reuse: another comparison of two of these arms links their runs, trains nothing, and
    # reads the same final evaluations; a finished run under another config is refused
    out2 = tmp_path / "cmp2"
    log = _finish(_compare(out2, cache, "--arms", "grpo,cipo", "--reuse", str(out)))
    assert not [line for line in log.splitlines() if " seed " in line and " -> " in line]
    assert sum(": reusing " in line for line in log.splitlines()) == 4
    assert all((out2 / f"{arm}-seed{s}").resolve() == (out / f"{arm}-seed{s}").resolve()
               for arm in ("grpo", "cipo") for s in (0, 1))
    trained = {f: t for f, t in _files(out).items() if "/evals/" not in f}  # at most new cached evaluations
    assert trained == {f: t for f, t in after.items() if "/evals/" not in f}
    reused = json.loads((out2 / "compare.json").read_text())["equal_steps"]["per_seed"]
    assert reused == {arm: report["equal_steps"]["per_seed"][arm] for arm in ("grpo", "cipo")}
    with pytest.raises(ValueError, match=r"another config: optim\.lr"):
        link_finished_run("configs/tiny.yaml", [o.replace("lr=1e-2", "lr=5e-3") for o in TINY], "cipo-no-nll", 0, 2,
                          out / "cipo-no-nll-seed0", tmp_path / "cmp3" / "cipo-no-nll-seed0")
