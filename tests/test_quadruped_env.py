"""The A1 model and its batched simulator: standing, a scripted drop, joint order, and determinism."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robotrl.envs.quadruped.model import JOINT_NAMES, LEGS, NUM_JOINTS, build_a1
from robotrl.envs.quadruped.phases import JumpPhases
from robotrl.envs.quadruped.sim import QuadrupedSim, QuadrupedSimConfig, QuadrupedState

DROP_HEIGHT_M = 0.5


def _sim(num_envs: int = 1, num_threads: int = 1, **overrides: object) -> QuadrupedSim:
    return QuadrupedSim(QuadrupedSimConfig(num_envs=num_envs, num_threads=num_threads, **overrides))


def _tilt_rad(quat_wxyz: np.ndarray) -> np.ndarray:
    """Angle between the trunk's up axis and the world's."""
    x, y = quat_wxyz[:, 1], quat_wxyz[:, 2]
    up_z = 1.0 - 2.0 * (x * x + y * y)
    return np.arccos(np.clip(up_z, -1.0, 1.0))


def _rollout(sim: QuadrupedSim, actions: np.ndarray) -> list[QuadrupedState]:
    return [sim.step(action) for action in actions]


def test_joint_order_and_count_are_as_exposed() -> None:
    robot = build_a1()
    model = robot.model
    assert NUM_JOINTS == 12 == model.nu
    assert JOINT_NAMES[:3] == ("FR_hip_joint", "FR_thigh_joint", "FR_calf_joint")
    assert [name[:2] for name in JOINT_NAMES[::3]] == list(LEGS) == ["FR", "FL", "RR", "RL"]
    for i, name in enumerate(JOINT_NAMES):
        joint = model.joint(name)
        assert robot.joint_qpos_adr[i] == joint.qposadr[0]
        assert model.actuator_trnid[i, 0] == joint.id, f"actuator {i} does not drive {name}"
    for leg, geom_id, body_id in zip(LEGS, robot.foot_geom_ids, robot.foot_body_ids, strict=True):
        assert model.geom(geom_id).name == model.body(body_id).name == f"{leg}_foot"
    # Feet and trunk are the only robot geoms that collide.
    colliding = {model.geom(i).name for i in range(model.ngeom) if model.geom_contype[i]}
    assert colliding == {"trunk", *(f"{leg}_foot" for leg in LEGS)}
    assert robot.torque_limit.tolist() == [20.0, 55.0, 55.0] * 4  # the URDF's effort limits


def test_standing_robot_stays_up_for_two_seconds_at_zero_action() -> None:
    sim = _sim()
    steps = round(2.0 / sim.policy_dt)
    states = _rollout(sim, np.zeros((steps, 1, NUM_JOINTS)))
    height = np.array([s.base_pos_w[0, 2] for s in states])
    tilt = np.array([_tilt_rad(s.base_quat_wxyz)[0] for s in states])
    assert height.min() > 0.25, f"base sank to {height.min():.3f} m"
    assert tilt.max() < math.radians(5.0), f"trunk tilted {math.degrees(tilt.max()):.1f} deg"
    assert all(s.foot_contact.all() and not s.trunk_contact.any() for s in states)


def test_dropped_robot_flies_then_landing_is_detected_at_free_fall_time() -> None:
    sim = _sim()
    phases = JumpPhases(num_envs=1)
    zero = np.zeros((1, NUM_JOINTS))
    standing = sim.step(zero)
    assert not phases.update(torch.from_numpy(standing.foot_contact)).any()
    assert standing.foot_contact.all(), "the standing robot should have all four feet down"

    raised = sim.robot.standing_qpos.copy()
    raised[2] += DROP_HEIGHT_M
    sim.reset_idx(np.array([0]), qpos=raised[None])
    landed_at_s = None
    for step in range(round(1.0 / sim.policy_dt)):
        landed = phases.update(torch.from_numpy(sim.step(zero).foot_contact))
        if landed.item():
            landed_at_s = (step + 1) * sim.policy_dt
            break
        assert phases.in_flight.item(), f"a foot touched down at step {step} while falling"
    assert phases.has_jumped.item() and phases.has_landed.item()
    free_fall_s = math.sqrt(2.0 * DROP_HEIGHT_M / 9.81)
    assert landed_at_s is not None, "no landing within 1 s"
    # Contacts are seen within one policy step of the touchdown.
    assert abs(landed_at_s - free_fall_s) <= sim.policy_dt + 1e-9, (landed_at_s, free_fall_s)


def test_batched_envs_with_identical_actions_match_one_env_alone() -> None:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.0, 1.0, size=(25, 1, NUM_JOINTS))
    alone = _rollout(_sim(num_envs=1, num_threads=1), actions)
    batch = _rollout(_sim(num_envs=16, num_threads=2), np.repeat(actions, 16, axis=1))
    for one, many in zip(alone, batch, strict=True):
        for name in ("base_pos_w", "base_quat_wxyz", "joint_pos", "joint_vel", "foot_force_n"):
            a, b = getattr(one, name), getattr(many, name)
            assert np.array_equal(np.repeat(a, 16, axis=0), b), f"{name} differs between batch and alone"


def test_thread_count_does_not_change_results() -> None:
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1.0, 1.0, size=(20, 8, NUM_JOINTS))
    one = _rollout(_sim(num_envs=8, num_threads=1), actions)
    two = _rollout(_sim(num_envs=8, num_threads=2), actions)
    assert all(np.array_equal(a.joint_pos, b.joint_pos) for a, b in zip(one, two, strict=True))
    assert not np.array_equal(one[-1].joint_pos[0], one[-1].joint_pos[1]), "envs should differ"


def test_nonfinite_action_or_diverging_physics_is_contained_to_its_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its divergence warning to ./MUJOCO_LOG.TXT
    clean, dirty = _sim(num_envs=3), _sim(num_envs=3)
    runaway = np.zeros((1, dirty.robot.model.nv))
    runaway[0, dirty.robot.base_dof_adr] = 1e12  # past MuJoCo's limit: it resets that simulation
    dirty.reset_idx(np.array([2]), qvel=runaway)
    action = np.full((3, NUM_JOINTS), 0.3)
    bad = action.copy()
    bad[1, 4] = np.nan
    expected, got = clean.step(action), dirty.step(bad)
    assert got.nonfinite.tolist() == [False, True, True]
    assert np.isfinite(got.joint_pos).all()
    assert np.array_equal(got.joint_pos[0], expected.joint_pos[0])
    standing_again = dirty.step(np.zeros((3, NUM_JOINTS)))
    assert not standing_again.nonfinite.any()
    assert standing_again.base_pos_w[1:, 2] == pytest.approx(dirty.robot.standing_height_m, abs=0.01)


def test_per_env_parameters_change_only_their_env() -> None:
    sim = _sim(num_envs=2, per_env_models=True)
    sim.set_trunk_mass(np.array([1]), np.array([sim.robot.model.body_mass[sim.robot.trunk_body_id] + 3.0]))
    sim.set_pd_gains(np.array([1]), np.array([18.0]), np.array([0.45]))
    sim.set_foot_friction(np.array([1]), np.array([0.3]))
    for _ in range(10):
        state = sim.step(np.zeros((2, NUM_JOINTS)))
    assert state.base_pos_w[1, 2] < state.base_pos_w[0, 2] - 0.005, "heavier, softer robot should sit lower"
    assert build_a1().model.body_mass[build_a1().trunk_body_id] == pytest.approx(4.713)  # cache untouched
    with pytest.raises(ValueError, match="per_env_models=True"):
        _sim(num_envs=2).set_trunk_mass(np.array([0]), np.array([5.0]))
