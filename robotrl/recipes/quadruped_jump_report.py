"""The jumping report: an exported bundle jumps in MuJoCo and in pybullet on the same commands.

The bundle runs through onnxruntime (PolicyRunner), as on the robot, in both simulators; both are
scored by the same `jump_metrics`. Forward landings are swept to find the longest jump that still
succeeds at least half the time. Training curves (success per curriculum level, the in-training
evaluation, the mean level) come from the stages' checkpoint histories.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.config import from_dict
from robotrl.envs.quadruped.evaluation import jump_metrics
from robotrl.envs.quadruped.jump_env import QuadrupedJumpEnv
from robotrl.recipes.quadruped_jump import QuadrupedJumpTrainConfig, eval_env_config, read_jump_bundle
from robotrl.runtime.policy_runner import PolicyRunner

SIMULATORS = ("mujoco", "pybullet")
RANDOMISED = "mujoco-randomised"
"""MuJoCo robots with the training's domain randomisation (mass, friction, gains, latency), drawn per robot
from the evaluation seed: how robust the jumps are, beside the nominal robots of the sim-to-sim check."""
LONGEST_JUMP_SUCCESS = 0.5
"""A forward landing counts as achieved when at least this share of the jumps succeed (issue 6)."""


def bundle_config(bundle_dir: Path) -> QuadrupedJumpTrainConfig:
    """The training config a jump bundle was exported with (its provenance)."""
    spec = read_jump_bundle(bundle_dir)
    return from_dict(QuadrupedJumpTrainConfig, dict(spec.provenance.config), f"{bundle_dir}/policy.yaml")


def evaluate_bundle(
    bundle_dir: Path,
    config: QuadrupedJumpTrainConfig,
    landing_m: tuple[float, float],
    condition: str,
    episodes: int,
    obstacle_height_m: float | None = None,
) -> dict[str, float]:
    """One landing for `episodes` robots in a simulator (or RANDOMISED), the bundle through onnxruntime;
    with obstacle_height_m, over a box that high on the way (the obstacle stage's commands)."""
    if condition not in (*SIMULATORS, RANDOMISED):
        raise ValueError(f"unknown condition {condition!r}: one of {[*SIMULATORS, RANDOMISED]}")
    runner = PolicyRunner(bundle_dir)
    runner.reset(episodes)
    stage = None if obstacle_height_m is None else "obstacle"
    env_config = eval_env_config(config, landing_m, stage, obstacle_height_m)
    env_config = dataclasses.replace(
        env_config,
        num_envs=episodes,
        simulator="mujoco" if condition == RANDOMISED else condition,
        randomisation=dataclasses.replace(env_config.randomisation, enabled=condition == RANDOMISED),
    )
    env = QuadrupedJumpEnv(env_config)

    def actor(obs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(runner.step(obs.numpy()))

    try:
        return jump_metrics(
            actor, env, seed=config.eval.seed, min_apex_gain_m=config.env.apex_gain_criterion_m
        )
    finally:
        env.close()


def sim_to_sim(
    bundle_dir: Path,
    config: QuadrupedJumpTrainConfig,
    landings: list[tuple[float, float]],
    episodes: int,
    conditions: tuple[str, ...] = SIMULATORS,
) -> dict[str, dict[str, dict[str, float]]]:
    """{condition: {"dx,dy": metrics}} for every landing; a condition is a simulator or RANDOMISED."""
    return {
        name: {_key(at): evaluate_bundle(bundle_dir, config, at, name, episodes) for at in landings}
        for name in conditions
    }


def longest_jump(results: dict[str, dict[str, float]]) -> float:
    """The longest forward landing [m] with success >= LONGEST_JUMP_SUCCESS (0 if none)."""
    achieved = [
        float(key.split(",")[0]) for key, m in results.items() if m["success_rate"] >= LONGEST_JUMP_SUCCESS
    ]
    return max(achieved, default=0.0)


def over_obstacles(
    bundle_dir: Path,
    config: QuadrupedJumpTrainConfig,
    heights_m: tuple[float, ...],
    episodes: int,
    conditions: tuple[str, ...] = SIMULATORS,
) -> dict[str, dict[str, dict[str, float]]]:
    """{condition: {"h": metrics}}: jumps to the obstacle stage's evaluation landing over boxes of each
    height, in each condition."""
    landing = config.obstacle.eval_landing_m
    return {
        name: {
            f"{h:.2f}": evaluate_bundle(bundle_dir, config, landing, name, episodes, obstacle_height_m=h)
            for h in heights_m
        }
        for name in conditions
    }


def results_table(
    results: dict[str, dict[str, dict[str, float]]], row_label: str = "landing (dx, dy) [m]"
) -> str:
    """One row per command (landing or box height), success / apex gain / landing error per condition."""
    sims = list(results)
    header = f"| {row_label} | " + " | ".join(
        f"{s} success | {s} apex gain [m] | {s} landing error [m]" for s in sims
    )
    lines = [header + " |", "|" + "---|" * (1 + 3 * len(sims))]
    for key in results[sims[0]]:
        cells = []
        for sim in sims:
            m = results[sim][key]
            cells += [
                f"{m['success_rate']:.2f}",
                f"{m['apex_gain_m_mean']:.3f}",
                _fmt(m["landing_error_m_mean"]),
            ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage_history(run_dir: Path, stage: str) -> list[dict[str, float]]:
    """The per-iteration metrics a stage's latest checkpoint holds ([] if it has none)."""
    marker = run_dir / stage / "checkpoints" / "latest.txt"
    if not marker.is_file():
        return []
    return list(torch.load(marker.parent / marker.read_text().strip(), weights_only=False)["history"])


def plot_curves(run_dir: Path, stages: tuple[str, ...], path: Path) -> None:
    """Success per curriculum level, the evaluation's success and apex gain, and the mean level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    offset = 0.0
    for stage in stages:
        history = stage_history(run_dir, stage)
        if not history:
            continue
        steps = np.array([h["perf/env_steps"] for h in history]) / 1e6 + offset
        levels = sorted({k for h in history for k in h if k.startswith("episode/level_")})
        for key in levels:
            x, y = _series(history, steps, key)
            axes[0].plot(x, _smooth(y), lw=1, label=f"{stage} {key.split('/')[1]}")
        for key, ax, label in (
            ("eval/success_rate", axes[1], "evaluation success"),
            ("eval/apex_gain_m_mean", axes[1], "evaluation apex gain [m]"),
            ("episode/curriculum/level_mean", axes[2], "mean level"),
        ):
            x, y = _series(history, steps, key)
            if len(x):
                ax.plot(x, y, marker="." if key.startswith("eval/") else None, label=f"{stage} {label}")
        axes[0].axvline(offset, color="grey", lw=0.5)
        offset = float(steps[-1])
    axes[0].set(title="training success per curriculum level", xlabel="env steps [M]", ylim=(0, 1.05))
    axes[1].set(title="deterministic evaluation (its stage's landing)", xlabel="env steps [M]")
    axes[2].set(title="curriculum mean level", xlabel="env steps [M]", ylabel="level")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    bundle_dir: Path,
    out_dir: Path,
    distances_m: tuple[float, ...],
    episodes: int,
    conditions: tuple[str, ...] = SIMULATORS,
    run_dir: Path | None = None,
    obstacle_heights_m: tuple[float, ...] = (),
    seed: int | None = None,
) -> dict[str, Any]:
    """results.md / results.json (and curves.png with a run) for an in-place jump and forward landings.
    The success gap is between the simulators (the first is the reference), not against RANDOMISED.
    `seed` draws other starts and box widths than the bundle's eval.seed (e.g. to check a checkpoint
    chosen on those of eval.seed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = bundle_config(bundle_dir)
    if seed is not None:
        config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, seed=seed))
    landings = [(0.0, 0.0), *((d, 0.0) for d in distances_m)]
    results = sim_to_sim(bundle_dir, config, landings, episodes, conditions)
    forward = {sim: {k: m for k, m in r.items() if k != _key((0.0, 0.0))} for sim, r in results.items()}
    longest = {sim: longest_jump(r) for sim, r in forward.items()}
    simulators = [c for c in conditions if c in SIMULATORS]
    gap = {
        key: abs(results[simulators[0]][key]["success_rate"] - results[sim][key]["success_rate"])
        for sim in simulators[1:]
        for key in results[sim]
    }
    report = {
        "bundle": str(bundle_dir),
        "episodes_per_landing": episodes,
        "results": results,
        "longest_jump_m": longest,
        "max_success_gap_points": 100 * max(gap.values(), default=0.0),
    }
    lines = [
        f"# Jumping: {bundle_dir}",
        "",
        f"{episodes} robots per landing (starts seed {config.eval.seed}), the bundle through onnxruntime, "
        "nominal robot (no randomisation)"
        + (f"; {RANDOMISED}: each robot with the training's domain randomisation." if RANDOMISED in conditions
           else "."),
        "Success: jumped, landed within 0.2 m of the target and stayed there until the episode's end.",
        "",
        results_table(results),
        "",
        *(f"- longest forward jump with success >= {LONGEST_JUMP_SUCCESS:.0%} in {s}: {d:.2f} m"
          for s, d in longest.items()),
    ]  # fmt: skip
    if len(simulators) > 1:
        lines.append(
            f"- largest success gap between the simulators: {report['max_success_gap_points']:.0f} points"
        )
    if obstacle_heights_m:
        boxes = over_obstacles(bundle_dir, config, obstacle_heights_m, episodes, conditions)
        report["over_obstacles"] = boxes
        landing, curriculum = config.obstacle.eval_landing_m, config.env.curriculum
        centre = curriculum.obstacle_centre_x_m(landing[0])
        lines += [
            "",
            f"Over a box on the way to a ({landing[0]:g}, {landing[1]:g}) m landing (centred at "
            f"x = {centre:.3g} m, {curriculum.obstacle_depth_m:g} m deep, its width drawn from the "
            "curriculum's range):",
            "",
            results_table(boxes, "box height [m]"),
        ]
    if run_dir is not None:
        plot_curves(run_dir, config.stages, out_dir / "curves.png")
        lines += ["", "![training curves](curves.png)"]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    (out_dir / "results.json").write_text(json.dumps(report, indent=2))
    return report


def _key(landing: tuple[float, float]) -> str:
    return f"{landing[0]:.2f},{landing[1]:.2f}"


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _series(history: list[dict[str, float]], steps: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(s, h[key]) for s, h in zip(steps, history, strict=True) if key in h]
    return (np.array([r[0] for r in rows]), np.array([r[1] for r in rows])) if rows else (np.array([]),) * 2


def _smooth(y: np.ndarray, window: int = 10) -> np.ndarray:
    if len(y) < window:
        return y
    return np.convolve(y, np.ones(window) / window, mode="same")
