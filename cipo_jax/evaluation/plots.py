"""PNG figures (matplotlib, Agg backend: no display needed): training curves and pass@k curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def moving_average(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over up to `window` points (shorter at the start), NaNs ignored."""
    x = np.asarray(values, np.float64)
    out = np.empty_like(x)
    for i in range(len(x)):
        chunk = x[max(0, i - window + 1):i + 1]
        out[i] = np.nanmean(chunk) if np.isfinite(chunk).any() else np.nan
    return out


def plot_demo(metrics: list[dict[str, Any]], evals: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Left: training reward per RL step (and its moving average). Right: pass@k per evaluated policy."""
    plt = _pyplot()
    fig, (ax_r, ax_k) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [m["step"] for m in metrics]
    reward = [np.nan if m.get("reward_mean") is None else m["reward_mean"] for m in metrics]
    ax_r.plot(steps, reward, alpha=0.35, label="reward_mean")
    ax_r.plot(steps, moving_average(reward, 10), label="moving average (10)")
    ax_r.set(xlabel="RL step", ylabel="training reward", title="Training reward")
    ax_r.legend()
    for name, result in evals.items():
        ks = sorted(int(k) for k in result["pass_at_k"])
        ax_k.plot(ks, [result["pass_at_k"][str(k)] for k in ks], marker="o", label=name)
    _k_axis(ax_k, ks, "Held-out pass@k")
    ax_k.legend()
    return _save(fig, path)


def plot_compare(metrics: dict[str, list[list[dict[str, Any]]]], curves: dict[str, dict[str, dict[str, list]]],
                 path: str | Path, *, window: int) -> Path:
    """Per arm, mean over seeds with a ± 1 SE band: training reward against RL step and against
    generated tokens (top), and held-out pass@k against k in each view of `curves`
    ({view: {arm: {"k", "mean", "se"}}}, bottom)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    for i, (arm, runs) in enumerate(metrics.items()):
        length = min(len(ms) for ms in runs)
        reward = np.array([moving_average([np.nan if m.get("reward_mean") is None else m["reward_mean"]
                                           for m in ms[:length]], window) for ms in runs])  # (seeds, steps)
        tokens = np.array([np.cumsum([m["tokens"] for m in ms[:length]]) for ms in runs]).mean(axis=0)
        mean, se = reward.mean(axis=0), reward.std(axis=0, ddof=1) / np.sqrt(len(runs))
        for ax, x in ((axes[0, 0], np.arange(1, length + 1)), (axes[0, 1], tokens)):
            _band(ax, x, mean, se, f"C{i}", arm)
    axes[0, 0].set(xlabel="RL step", ylabel=f"training reward (moving avg {window})", title="Equal steps")
    axes[0, 1].set(xlabel="generated tokens (cumulative, mean over seeds)",
                   ylabel=f"training reward (moving avg {window})", title="Equal token budget")
    for ax, (view, per_arm) in zip(axes[1], curves.items()):
        for i, (arm, c) in enumerate(per_arm.items()):
            _band(ax, np.array(c["k"]), np.array(c["mean"]), np.array(c["se"]), f"C{i}", arm, marker="o")
        _k_axis(ax, c["k"], f"Held-out pass@k, {view.replace('_', ' ')}")
    for ax in axes.flat:
        ax.legend(fontsize=8)
    return _save(fig, path)


def _band(ax, x: np.ndarray, mean: np.ndarray, se: np.ndarray, colour: str, label: str, **style) -> None:
    ax.plot(x, mean, color=colour, label=label, **style)
    ax.fill_between(x, mean - se, mean + se, color=colour, alpha=0.2)


def plot_curves(curves: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]], path: str | Path) -> Path:
    """Left: held-out pass@1 per checkpoint (band: ± 1 SE), dashed: the same on training problems.
    Right: training reward per RL step (moving average of 20). One colour per run."""
    plt = _pyplot()
    fig, (ax_p, ax_r) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (label, (curve, metrics)) in enumerate(curves.items()):
        colour = f"C{i}"
        for split, style in (("test", "-"), ("train", "--")):
            pts = curve["points"].get(split)
            if not pts:
                continue
            x = np.array([p["step"] for p in pts])
            y, se = np.array([p["pass@1"] for p in pts]), np.array([p["pass@1_se"] for p in pts])
            ax_p.plot(x, y, style, color=colour, marker="o", ms=3,
                      label=label if split == "test" else f"{label} (train problems)")
            if split == "test":
                ax_p.fill_between(x, y - se, y + se, color=colour, alpha=0.15)
        reward = [np.nan if m.get("reward_mean") is None else m["reward_mean"] for m in metrics]
        ax_r.plot([m["step"] for m in metrics], moving_average(reward, 20), color=colour, label=label)
    ax_p.set(xlabel="RL step", ylabel="pass@1 (T = sampling temperature)", title="Held-out pass@1 (± 1 SE)")
    ax_r.set(xlabel="RL step", ylabel="reward_mean (moving average 20)", title="Training reward")
    ax_p.legend(fontsize=7)
    ax_r.legend(fontsize=7)
    return _save(fig, path)


def _k_axis(ax, ks: list[int], title: str) -> None:
    """pass@k against k = 1, 2, 4, ... on a base-2 log axis labelled at each k."""
    ax.set(xlabel="k", ylabel="pass@k", title=title)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
