"""PNGs of evaluations: flights over time, the suite's metrics against mass, errors around a change."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from robotrl.envs.quadrotor.evaluation import FlightLog, HoverCriterion


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    fig.clf()
    _pyplot().close(fig)
    return path


def plot_flights(logs: dict[str, FlightLog], path: Path, criterion: HoverCriterion, shown: int = 6) -> Path:
    """Trajectories and position error over time, one colour per controller."""
    plt = _pyplot()
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
    return _save(fig, path)


def plot_versus_mass(
    mass_kg: np.ndarray, panels: dict[str, tuple[str, dict[str, np.ndarray]]], path: Path, title: str
) -> Path:
    """One panel per metric against mass (log axis): title -> (kind, controller -> [Q] per-quadrotor values).

    kind 'fraction' plots on [0, 1], 'log' on a log axis. Infinite values (crashed, never settled) are drawn
    as crosses along the top of their panel.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (metric, (kind, by_controller)) in zip(axes[0], panels.items(), strict=True):
        finite = np.concatenate([v[np.isfinite(v)] for v in by_controller.values()])
        top = 1.2 * float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        for name, values in by_controller.items():
            ok, failed = np.isfinite(values), np.isinf(values)
            (line,) = ax.plot(mass_kg[ok], values[ok], "o", ms=4, alpha=0.7, label=name)
            ax.plot(mass_kg[failed], np.full(failed.sum(), top), "x", color=line.get_color(), ms=5)
        ax.set(xscale="log", xlabel="mass [kg]", ylabel=metric, title=f"{title}: {metric}")
        if kind == "fraction":
            ax.set_ylim(-0.05, 1.05)
        else:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_event_traces(
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path, within_m: float
) -> Path:
    """Distance to the target around a jump or change (t = 0): median and 10-90 % band per controller.

    panels: title -> controller -> (time since the event [W], error [W, episodes], NaN for episodes that
    do not count).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, by_controller) in zip(axes[0], panels.items(), strict=True):
        for colour, (name, (t, err)) in zip(colours, by_controller.items(), strict=False):
            counted = ~np.isnan(err).all(axis=0)
            if counted.any():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # times after every counted one crashed
                    q10, q50, q90 = np.nanpercentile(err[:, counted], (10, 50, 90), axis=1)
                ax.fill_between(t, q10, q90, color=colour, alpha=0.2)
                ax.plot(t, q50, color=colour, label=f"{name} ({int(counted.sum())} episodes)")
        ax.axhline(within_m, color="k", ls="--", lw=0.8)
        ax.axvline(0.0, color="k", ls=":", lw=0.8)
        ax.set(xlabel="time since the change [s]", ylabel="position error [m]", yscale="log", title=title)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)
