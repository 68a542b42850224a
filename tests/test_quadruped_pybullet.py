"""The pybullet backend against the MuJoCo one: standing, a scripted drop, frames, and what it refuses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robotrl.envs.quadruped.jump_env import (
    ACTION_DIM,
    OBSERVATION_FIELDS,
    PRIVILEGED_FIELDS,
    QuadrupedJumpEnv,
    QuadrupedJumpEnvConfig,
    RandomisationConfig,
)
from robotrl.envs.quadruped.model import NUM_JOINTS
from robotrl.envs.quadruped.pybullet_sim import PybulletQuadrupedSim
from robotrl.envs.quadruped.sim import QuadrupedSim, QuadrupedSimConfig

DROP_HEIGHT_M = 0.4


def _env(simulator: str, num_envs: int = 1, **overrides: object) -> QuadrupedJumpEnv:
    config = QuadrupedJumpEnvConfig(num_envs=num_envs, num_threads=1, simulator=simulator, **overrides)
    return QuadrupedJumpEnv(config)


def _tilt_rad(quat_wxyz: np.ndarray) -> np.ndarray:
    """Angle between the trunk's up axis and the world's."""
    x, y = quat_wxyz[:, 1], quat_wxyz[:, 2]
    return np.arccos(np.clip(1.0 - 2.0 * (x * x + y * y), -1.0, 1.0))


def _field(privileged_obs: torch.Tensor, name: str) -> torch.Tensor:
    """One named field of the privileged observation (the policy observation, then PRIVILEGED_FIELDS)."""
    start = 0
    for field_name, size, _, _ in (*OBSERVATION_FIELDS, *PRIVILEGED_FIELDS):
        if field_name == name:
            return privileged_obs[:, start : start + size]
        start += size
    raise KeyError(name)


def test_standing_robot_stays_up_in_pybullet_for_two_seconds_at_zero_action() -> None:
    sim = PybulletQuadrupedSim(QuadrupedSimConfig(num_envs=2))
    states = [sim.step(np.zeros((2, NUM_JOINTS))) for _ in range(round(2.0 / sim.policy_dt))]
    sim.close()
    height = np.array([s.base_pos_w[:, 2] for s in states])
    tilt = np.array([_tilt_rad(s.base_quat_wxyz) for s in states])
    assert np.abs(height - sim.robot.standing_height_m).max() < 0.02, (
        f"height {height.min():.3f}-{height.max():.3f}"
    )
    assert tilt.max() < math.radians(5.0), f"trunk tilted {math.degrees(tilt.max()):.1f} deg"
    assert all(s.foot_contact.all() and not s.trunk_contact.any() for s in states)
    # Each robot stands on its own grid cell but reports the same state, relative to its own origin.
    assert np.allclose(states[-1].base_pos_w[0], states[-1].base_pos_w[1], atol=1e-6)
    weight_n = sim.robot.model.body_subtreemass[0] * 9.81
    assert states[-1].foot_force_n.sum(-1) == pytest.approx(weight_n, rel=0.1)


def test_scripted_drop_in_the_pybullet_env_registers_flight_then_landing() -> None:
    env = _env("pybullet", upward_episode_s=1.0)
    env.reset(seed=0)
    raised = env.sim.robot.standing_qpos.copy()
    raised[2] += DROP_HEIGHT_M
    env.sim.reset_idx(np.array([0]), qpos=raised[None])
    phases, done = [], False
    while not done:
        _, _, terminated, truncated, info = env.step(torch.zeros(1, ACTION_DIM))
        phases.append({k: v.item() for k, v in info["phase"].items()})
        done = bool(terminated.item() or truncated.item())
    env.close()
    assert phases[0]["in_flight"] and phases[0]["has_jumped"] and not phases[0]["has_landed"]
    landings = [i for i, p in enumerate(phases) if p["landed"]]
    assert len(landings) == 1, "exactly one first landing"
    assert all(p["in_flight"] for p in phases[: landings[0]])
    assert all(p["has_landed"] for p in phases[landings[0] :])
    free_fall_steps = math.sqrt(2.0 * DROP_HEIGHT_M / 9.81) / env.dt
    assert abs(landings[0] + 1 - free_fall_steps) <= 1.0
    assert info["episode"]["apex_gain_m_mean"] == pytest.approx(DROP_HEIGHT_M, abs=0.01)


def test_mujoco_and_pybullet_agree_on_the_standing_observation_after_one_second() -> None:
    obs = {}
    for simulator in ("mujoco", "pybullet"):
        env = _env(simulator)
        env.reset(seed=0)
        for _ in range(round(1.0 / env.dt)):
            *_, info = env.step(torch.zeros(1, ACTION_DIM))
        obs[simulator] = info["privileged_obs"]
        env.close()

    def error(name: str) -> float:
        return (_field(obs["mujoco"], name) - _field(obs["pybullet"], name)).abs().max().item()

    assert error("joint_pos_rel") < 0.1, f"joint positions differ by {error('joint_pos_rel'):.3f} rad"
    assert error("base_height") < 0.03, f"base heights differ by {error('base_height'):.3f} m"
    assert error("projected_gravity_b") < 0.05
    assert error("foot_contact") == 0.0


def test_frames_agree_with_mujoco_in_free_flight() -> None:
    """Tilted, spinning and moving in the air for 0.1 s: quaternion order, world linear velocity and body
    angular velocity must come out as MuJoCo's (a swapped convention shows up as errors near 1)."""
    config = QuadrupedSimConfig(num_envs=1, num_threads=1)
    mj, pb = QuadrupedSim(config), PybulletQuadrupedSim(config)
    robot = mj.robot
    qpos = robot.standing_qpos.copy()
    qpos[2] += 1.0
    axis = np.array([0.3, 0.2, 0.1]) / np.linalg.norm([0.3, 0.2, 0.1])
    qpos[3:7] = [math.cos(0.3), *(math.sin(0.3) * axis)]
    qvel = np.zeros(robot.model.nv)
    qvel[0:6] = [0.5, -0.2, 1.0, 1.0, 2.0, 3.0]
    for sim in (mj, pb):
        sim.reset_idx(np.array([0]), qpos=qpos[None], qvel=qvel[None])
        for _ in range(5):
            state = sim.step(np.zeros((1, NUM_JOINTS)))
        assert not state.foot_contact.any()
    expected, got = mj.step(np.zeros((1, NUM_JOINTS))), pb.step(np.zeros((1, NUM_JOINTS)))
    pb.close()
    for name, tol in (
        ("base_pos_w", 1e-3),
        ("base_quat_wxyz", 1e-3),
        ("base_linvel_w", 0.01),
        ("base_angvel_b", 0.05),
    ):
        assert np.allclose(getattr(got, name), getattr(expected, name), atol=tol), name


def test_domain_randomisation_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="evaluation without domain randomisation"):
        PybulletQuadrupedSim(QuadrupedSimConfig(num_envs=1, per_env_models=True))
    with pytest.raises(ValueError, match="evaluation without domain randomisation"):
        _env("pybullet", randomisation=RandomisationConfig(enabled=True))
    with pytest.raises(ValueError, match="simulator must be"):
        QuadrupedJumpEnvConfig(simulator="bullet")  # type: ignore[arg-type]
