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


def plot_compare(metrics: dict[str, list[list[dict[str, Any]]]], evals: dict[str, list[dict[str, Any]]],
                 path: str | Path, *, window: int) -> Path:
    """Per arm, mean over seeds (band: +- std): reward vs step, reward vs generated tokens, final pass@k."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for arm, runs in metrics.items():
        length = min(len(ms) for ms in runs)
        reward = np.array([moving_average([np.nan if m.get("reward_mean") is None else m["reward_mean"]
                                           for m in ms[:length]], window) for ms in runs])
        tokens = np.array([np.cumsum([m["tokens"] for m in ms[:length]]) for ms in runs]).mean(axis=0)
        steps = np.arange(1, length + 1)
        mean, std = reward.mean(axis=0), reward.std(axis=0)
        for ax, x in ((axes[0], steps), (axes[1], tokens)):
            ax.plot(x, mean, label=arm)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        ks = sorted(int(k) for k in evals[arm][0]["pass_at_k"])
        curves = np.array([[e["pass_at_k"][str(k)] for k in ks] for e in evals[arm]])
        axes[2].errorbar(ks, curves.mean(axis=0), yerr=curves.std(axis=0), marker="o", capsize=3, label=arm)
    axes[0].set(xlabel="RL step", ylabel=f"training reward (moving avg {window})", title="Equal steps")
    axes[1].set(xlabel="generated tokens (cumulative)", ylabel=f"training reward (moving avg {window})",
                title="Equal token budget")
    _k_axis(axes[2], ks, "Held-out pass@k, final checkpoints")
    for ax in axes:
        ax.legend()
    return _save(fig, path)


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
