"""One quadrotor flown in real-time order by a bundle behind the safety chain, without ROS, and the
measures both this loop and the ROS 2 graph are scored by (tracking RMSE, a plot).

The ROS 2 graph adds messages, threads and a clock between the same pieces; flying them here in a
plain loop gives the number the graph must stay close to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robotrl.control.reference import ReferenceConfig
from robotrl.control.state import quadrotor_observation
from robotrl.envs.quadrotor.sim_backend import SimulatedQuadrotor
from robotrl.runtime.policy_runner import PolicyRunner
from robotrl.safety import SafetyChain

ARM_TIMEOUT_S = 10.0


def fly_direct(
    bundle_dir: str | Path,
    chain: SafetyChain,
    reference: ReferenceConfig,
    duration_s: float,
    platform: str,
    initial_position_m: tuple[float, float, float],
    rate_hz: float = 100.0,
) -> np.ndarray:
    """[T, 4] rows of (t, x, y, z), one per control period; t counts from arming, where the reference
    starts (as the ROS 2 graph's reference node does). Flies duration_s after arming."""
    dt = 1.0 / rate_hz
    runner = PolicyRunner(bundle_dir)
    runner.reset(1)
    robot = SimulatedQuadrotor(platform, dt, initial_position_m)
    previous = np.asarray(chain.limits.stop_action, np.float32)
    rows = []
    armed_at: float | None = None
    k = 0
    while armed_at is None or k * dt < armed_at + duration_s:
        t = k * dt
        k += 1
        state = robot.advance(t)
        if armed_at is None:
            armed, why = chain.arm(bundle_ok=True, now_s=t)
            if armed:
                armed_at = t
                runner.reset(1)  # the episode starts: as the policy node does on /robotrl/episode
            elif t > ARM_TIMEOUT_S:
                raise RuntimeError(f"the safety chain did not arm within {ARM_TIMEOUT_S} s: {why}")
        position, velocity = reference.at(0.0 if armed_at is None else t - armed_at)
        if armed_at is not None:
            rows.append((t - armed_at, *state.position_w))
        action = runner.step(quadrotor_observation(state, position, velocity, previous)[None])[0]
        out = chain.step(state, action, t, reference_position_w=position, action_stamp_s=t)
        robot.command(out.action)
        previous = out.action
    return np.asarray(rows)


def tracking_rmse(trajectory: np.ndarray, reference: ReferenceConfig, from_s: float) -> float:
    """Position RMSE [m] against the reference over rows with t >= from_s (t from the reference's start)."""
    rows = trajectory[trajectory[:, 0] >= from_s]
    if rows.size == 0:
        raise ValueError(f"no samples after {from_s} s: the flight was too short or did not run")
    targets = np.stack([reference.at(t)[0] for t in rows[:, 0]])
    return float(np.sqrt(np.mean(np.sum((rows[:, 1:4] - targets) ** 2, axis=1))))


def plot_tracking(flights: dict[str, np.ndarray], reference: ReferenceConfig, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, err) = plt.subplots(1, 2, figsize=(11, 4.5))
    t_ref = np.linspace(0, max(f[-1, 0] for f in flights.values()), 2000)
    ref = np.stack([reference.at(t)[0] for t in t_ref])
    top.plot(ref[:, 0], ref[:, 1], "k--", lw=1, label="reference")
    for label, flight in flights.items():
        top.plot(flight[:, 1], flight[:, 2], lw=1.2, label=label)
        targets = np.stack([reference.at(t)[0] for t in flight[:, 0]])
        err.plot(flight[:, 0], np.linalg.norm(flight[:, 1:4] - targets, axis=1), lw=1, label=label)
    top.set(xlabel="x [m]", ylabel="y [m]", title="figure-8, top view", aspect="equal")
    err.set(
        xlabel="time since the reference started [s]", ylabel="position error [m]", title="tracking error"
    )
    top.legend(fontsize=8)
    err.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
