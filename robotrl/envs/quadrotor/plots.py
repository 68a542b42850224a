"""One PNG per evaluation: trajectories and position error over time, one colour per controller."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robotrl.envs.quadrotor.evaluation import FlightLog, HoverCriterion


def plot_flights(logs: dict[str, FlightLog], path: Path, criterion: HoverCriterion, shown: int = 6) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax_xy, ax_z, ax_err = axes
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, (name, log) in zip(colours, logs.items(), strict=False):
        t, pos = log.time_s, log.flown_position_w
        for i in range(min(shown, pos.shape[1])):
            label = name if i == 0 else None
            ax_xy.plot(pos[:, i, 0], pos[:, i, 1], color=colour, lw=0.8, label=label)
            ax_z.plot(t, pos[:, i, 2] - log.target_position_w[:, i, 2], color=colour, lw=0.8, label=label)
        err = log.position_error_m
        valid = ~np.isnan(err).all(axis=1)
        q10, q50, q90 = (np.nanpercentile(err[valid], q, axis=1) for q in (10, 50, 90))
        ax_err.fill_between(t[valid], q10, q90, color=colour, alpha=0.2)
        ax_err.plot(t[valid], q50, color=colour, label=f"{name} (median, 10-90%)")
    first = next(iter(logs.values()))
    for i in range(min(shown, first.position_w.shape[1])):
        ax_xy.plot(first.target_position_w[:, i, 0], first.target_position_w[:, i, 1], "k:", lw=0.8)
    ax_xy.set(
        xlabel="x [m]", ylabel="y [m]", title=f"first {shown} episodes (dotted: target)", aspect="equal"
    )
    ax_z.set(xlabel="time [s]", ylabel="z - z_target [m]", title="altitude error")
    ax_err.axhline(criterion.within_m, color="k", ls="--", lw=0.8, label=f"{criterion.within_m} m")
    ax_err.axvline(criterion.by_s, color="k", ls=":", lw=0.8)
    ax_err.set(xlabel="time [s]", ylabel="position error [m]", yscale="log", title="position error")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
