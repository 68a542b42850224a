"""The quadruped's deployment pieces without ROS: the robot-side observation against the jump env's, the joint
filters and the damped fallback, the A1 profile against the model, the MuJoCo backend, the jump score and
the node list."""

from __future__ import annotations

import dataclasses
import math
import os
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pybullet_data
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from robotrl.config import ConfigError
from robotrl.control.legged import (
    JUMP_OBSERVATION_LAYOUT,
    ActionFilter,
    JointProfile,
    JumpObservation,
    LeggedState,
    ema_alpha,
    jump_command,
    jump_outcome,
)
from robotrl.deployment import (
    REPO_ROOT,
    DeploymentConfig,
    joint_limits,
    joint_safety_chain,
    load_deployment,
    load_robot_profile,
    node_list,
)
from robotrl.envs.quadruped.curriculum import CurriculumConfig
from robotrl.envs.quadruped.jump_env import OBSERVATION_FIELDS, QuadrupedJumpEnv, QuadrupedJumpEnvConfig
from robotrl.envs.quadruped.model import JOINT_NAMES, A1Config, build_a1
from robotrl.envs.quadruped.sim import QuadrupedSimConfig
from robotrl.envs.quadruped.sim_backend import FOOT_NAMES, SimulatedQuadruped
from robotrl.recipes.quadruped_jump import QuadrupedJumpTrainConfig, jump_policy_spec
from robotrl.safety import (
    JointSafetyLimits,
    Mode,
    SafetyChain,
    SafetyConfigError,
    check_joints_against_bundle,
)
from robotrl.safety.filters import FilterContext, Verdict
from robotrl.safety.joints import BodyTilt, JointRange, JointVelocityLimit, TorqueLimit

PROFILE = REPO_ROOT / "hardware/a1_sim.yaml"
DEPLOYMENT = REPO_ROOT / "configs/deploy/quadruped_sim.yaml"
LIMITS = joint_limits(load_robot_profile(str(PROFILE)))
JOINTS = LIMITS.joints
DEFAULT = np.asarray(JOINTS.default_pos_rad)
LOW, HIGH = np.asarray(LIMITS.joint_low_rad), np.asarray(LIMITS.joint_high_rad)
MAX_TORQUE = np.asarray(LIMITS.max_torque_nm)
DT = 0.02
STANDING_FORCE_N = 30.0


def _state(
    stamp_s: float,
    joint_pos: np.ndarray = DEFAULT,
    joint_vel: np.ndarray | None = None,
    tilt_deg: float = 0.0,
    airborne: bool = False,
) -> LeggedState:
    """A robot rolled by tilt_deg about its x axis, feet on the ground unless airborne."""
    half = math.radians(tilt_deg) / 2.0
    return LeggedState(
        stamp_s=stamp_s,
        joint_pos=np.asarray(joint_pos, np.float64),
        joint_vel=np.zeros(12) if joint_vel is None else np.asarray(joint_vel, np.float64),
        joint_torque=np.full(12, np.nan),
        quat_wxyz=np.array((math.cos(half), math.sin(half), 0.0, 0.0)),
        angular_velocity_b=np.zeros(3),
        foot_force_n=np.full(4, 0.0 if airborne else STANDING_FORCE_N),
    )


def _context(state: LeggedState | None, now_s: float = 0.0) -> FilterContext[LeggedState]:
    return FilterContext(now_s, state, None, now_s, np.full(12, np.nan), None)


def _armed_chain(limits: JointSafetyLimits = LIMITS) -> tuple[SafetyChain, float]:
    """A standing robot and a policy streaming action 0 for the proof of life, then armed."""
    chain = joint_safety_chain(limits)
    t = 0.0
    for k in range(round(limits.proof_of_life_s / DT) + 1):
        t = k * DT
        out = chain.step(_state(t), JOINTS.targets(np.zeros(12)), t, action_stamp_s=t)
        assert np.isnan(out.action).all(), "disarmed means damped"
    armed, reason = chain.arm(bundle_ok=True, now_s=t)
    assert armed, reason
    return chain, t


# ----------------------------------------------------------------------------------- observation
def test_the_robot_side_observation_matches_the_jump_envs() -> None:
    """States of a rollout (a drop into random actions, some beyond the clip) give the env's observation."""
    assert tuple((name, size) for name, size, _, _ in OBSERVATION_FIELDS) == JUMP_OBSERVATION_LAYOUT
    curriculum = CurriculumConfig(stage="forward", fixed_landing_m=(0.4, -0.1))
    env = QuadrupedJumpEnv(QuadrupedJumpEnvConfig(num_envs=1, num_threads=1, curriculum=curriculum))
    obs = env.reset(seed=3)
    raised = env.sim.robot.standing_qpos.copy()
    raised[2] += 0.3
    env.sim.reset_idx(np.array([0]), qpos=raised[None])
    builder = JumpObservation(DEFAULT, JOINTS.contact_threshold_n, JOINTS.action_clip)
    builder.start(jump_command(0.4, -0.1, 0.0))
    generator = torch.Generator().manual_seed(0)
    has_jumped, clipped = [], 0
    for k in range(30):
        s = env._state  # what observe() reads
        state = LeggedState(
            k * env.dt, s.joint_pos[0].numpy(), s.joint_vel[0].numpy(), np.full(12, np.nan),
            s.base_quat_wxyz[0].numpy(), s.base_angvel_b[0].numpy(), s.foot_force_n[0].numpy(),
        )  # fmt: skip
        np.testing.assert_allclose(builder.observe(state), obs[0].numpy(), atol=1e-5, err_msg=f"step {k}")
        action = 8.0 * torch.randn(1, 12, generator=generator)
        clipped += int((action.abs() > JOINTS.action_clip).sum())
        builder.record_action(action[0].numpy())
        obs, _, terminated, truncated, info = env.step(action)
        has_jumped.append(bool(info["phase"]["has_jumped"].item()))
        if (terminated | truncated).any():
            break  # the env reset into a new episode (the landing missed the target)
    env.close()
    assert len(has_jumped) >= 10 and clipped > 0
    assert has_jumped[0], "the drop is a flight: has_jumped must latch from the first step"


def test_the_action_ema_halves_the_power_at_its_cutoff() -> None:
    alpha = ema_alpha(5.0, 50.0)
    w = 2 * math.pi * 5.0 / 50.0
    gain = abs(alpha / (1 - (1 - alpha) * np.exp(-1j * w)))
    assert gain == pytest.approx(1 / math.sqrt(2), rel=1e-9) and 0.4 < alpha < 0.5
    assert ema_alpha(None, 50.0) == 1.0
    for bad in (0.0, 25.0):
        with pytest.raises(ValueError, match="cutoff"):
            ema_alpha(bad, 50.0)


def test_the_robot_side_targets_match_the_jump_envs_through_the_action_filter() -> None:
    """Random actions, some beyond the clip, one NaN: the safety node's mapping (clip, the bundle's EMA,
    default + scale) gives the env's joint targets, and the NaN neither moves nor poisons the filter."""
    env = QuadrupedJumpEnv(QuadrupedJumpEnvConfig(num_envs=1, num_threads=1, action_filter_hz=5.0))
    env.reset(seed=0)
    spec = jump_policy_spec(
        dataclasses.replace(QuadrupedJumpTrainConfig(), env=env.config), 1.0 / env.dt, 0.25
    )
    robot_filter = ActionFilter(spec.safety_limits["action_filter_alpha"], 12)
    assert robot_filter.alpha == pytest.approx(env.action_filter_alpha) and robot_filter.alpha < 1
    generator = torch.Generator().manual_seed(1)
    unfiltered_moved = False
    for k in range(12):
        action = 6.0 * torch.randn(1, 12, generator=generator)
        env.step(action)
        robot = JOINTS.targets(action[0].numpy(), robot_filter)
        np.testing.assert_allclose(
            np.clip(robot, LOW, HIGH), env._state.joint_target[0].numpy(), atol=1e-5, err_msg=f"step {k}"
        )
        unfiltered = np.clip(JOINTS.targets(action[0].numpy()), LOW, HIGH)
        unfiltered_moved |= not np.allclose(unfiltered, env._state.joint_target[0].numpy(), atol=1e-3)
    env.close()
    assert unfiltered_moved, "the filter must change the targets, or this test shows nothing"
    before = robot_filter.value.copy()
    assert np.isnan(robot_filter(np.full(12, np.nan))).all()
    np.testing.assert_array_equal(robot_filter.value, before)
    robot_filter.reset()
    np.testing.assert_allclose(robot_filter(np.ones(12)), robot_filter.alpha)


# ----------------------------------------------------------------------------------- jump score
def test_the_jump_score_works_in_the_start_heading_frame() -> None:
    """Facing +y (yaw 90 deg), a jump 0.5 m along world +y lands 0.5 m ahead; apex from the start height."""
    t = np.arange(6) * DT
    pos = np.array([[1.0, 2.0, 0.27], [1.0, 2.1, 0.4], [1.0, 2.3, 0.5], [1.0, 2.4, 0.35], [1.0, 2.5, 0.27],
                    [1.0, 2.5, 0.2]])  # fmt: skip
    yaw = np.full(6, math.pi / 2)
    contact = np.array(
        [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool
    )
    outcome = jump_outcome(t, pos, yaw, contact, 0.0, jump_command(0.5, 0.0, 0.0))
    assert outcome.jumped and outcome.landed
    assert outcome.apex_gain_m == pytest.approx(0.23)
    np.testing.assert_allclose(outcome.landing_position_rel_m, (0.5, 0.0), atol=1e-12)
    assert outcome.landing_error_m == pytest.approx(0.0, abs=1e-12)
    turned = jump_outcome(t, pos, yaw, contact, 0.0, jump_command(0.5, 0.0, 0.3))
    assert turned.landing_yaw_error_rad == pytest.approx(0.3)
    standing = jump_outcome(t, pos, yaw, np.ones((6, 4), bool), 0.0, jump_command(0.0, 0.0, 0.0))
    assert not standing.jumped and math.isnan(standing.landing_error_m)


def test_a_vertical_kick_scores_its_ballistic_apex() -> None:
    robot = SimulatedQuadruped(JOINTS, DT)
    robot.command(DEFAULT)
    rows, t = [], 0.0
    for k in range(60):
        t = k * DT
        if k == 10:
            robot.push(np.array((0.0, 0.0, 2.0)), np.zeros(3))
        state = robot.advance(t)
        rows.append((t, *robot.truth.base_pos_w[0], state.yaw_rad(), *state.foot_contact(1.0)))
    robot.close()
    rows_np = np.asarray(rows)
    outcome = jump_outcome(rows_np[:, 0], rows_np[:, 1:4], rows_np[:, 4], rows_np[:, 5:] > 0.5, 10 * DT,
                           jump_command(0.0, 0.0, 0.0))  # fmt: skip
    assert outcome.jumped and outcome.landed
    # 2 m/s up rises v^2 / 2g = 0.20 m, less what lifting the legs off the ground takes.
    assert 0.1 < outcome.apex_gain_m < 0.21
    assert outcome.landing_error_m < 0.05


# ----------------------------------------------------------------------------------- filters
finite_targets = st.lists(st.floats(-6.0, 6.0), min_size=12, max_size=12).map(np.array)


@given(targets=finite_targets, damped=st.lists(st.booleans(), min_size=12, max_size=12))
def test_joint_range_clips_targets_into_the_range_and_keeps_damped_ones(
    targets: np.ndarray, damped: list[bool]
) -> None:
    targets = np.where(damped, np.nan, targets)
    out, status = JointRange(LOW, HIGH, JOINTS.names)(targets, _context(None))
    np.testing.assert_array_equal(np.isnan(out), damped)
    finite = ~np.isnan(out)
    assert (out[finite] >= LOW[finite]).all() and (out[finite] <= HIGH[finite]).all()
    clipped = finite & (out != targets)
    assert (status.verdict is Verdict.MODIFIED) == clipped.any()
    assert all(JOINTS.names[i] in status.reason for i in np.flatnonzero(clipped))


@given(
    targets=finite_targets,
    offset=st.lists(st.floats(-1.0, 1.0), min_size=12, max_size=12).map(np.array),
    joint_vel=st.lists(st.floats(-30.0, 30.0), min_size=12, max_size=12).map(np.array),
)
# A torque exactly at the limit: the clip bounds, rounded apart from the torque, once moved this target.
@example(targets=np.eye(12)[3] * 1.401298464324817e-45, offset=-np.eye(12)[3], joint_vel=np.zeros(12))
def test_torque_limit_keeps_the_pd_torque_within_the_limit(
    targets: np.ndarray, offset: np.ndarray, joint_vel: np.ndarray
) -> None:
    state = _state(0.0, DEFAULT + offset, joint_vel)
    limiter = TorqueLimit(MAX_TORQUE, JOINTS.kp, JOINTS.kd, JOINTS.names)
    out, status = limiter(targets, _context(state))
    torque = JOINTS.kp * (out - state.joint_pos) - JOINTS.kd * joint_vel
    assert (np.abs(torque) <= MAX_TORQUE + 1e-9).all()
    requested = JOINTS.kp * (targets - state.joint_pos) - JOINTS.kd * joint_vel
    within = np.abs(requested) <= MAX_TORQUE
    np.testing.assert_array_equal(out[within], targets[within])  # nothing moves that need not
    assert (status.verdict is Verdict.MODIFIED) == (~within).any()


def test_torque_limit_damps_targets_it_cannot_bound_and_passes_damped_ones() -> None:
    limiter = TorqueLimit(MAX_TORQUE, JOINTS.kp, JOINTS.kd, JOINTS.names)
    out, status = limiter(DEFAULT.copy(), _context(None))
    assert np.isnan(out).all() and status.verdict is Verdict.MODIFIED and "damped" in status.reason
    out, status = limiter(np.full(12, np.nan), _context(_state(0.0)))
    assert np.isnan(out).all() and status.verdict is Verdict.OK


def test_a_joint_faster_than_its_limit_faults_naming_it() -> None:
    monitor = JointVelocityLimit(np.asarray(LIMITS.max_joint_velocity_radps), JOINTS.names)
    fast = np.zeros(12)
    fast[5] = -30.0  # FL calf, limit 28.6 rad/s
    _, status = monitor(DEFAULT, _context(_state(0.0, joint_vel=fast)))
    assert status.verdict is Verdict.FAULT and "FL_calf_joint 30 > 28.6" in status.reason
    fast[5] = -28.0
    assert monitor(DEFAULT, _context(_state(0.0, joint_vel=fast)))[1].verdict is Verdict.OK
    fast[0] = math.nan
    assert monitor(DEFAULT, _context(_state(0.0, joint_vel=fast)))[1].verdict is Verdict.FAULT


@pytest.mark.parametrize(
    ("tilt_deg", "airborne", "verdict"),
    [
        (55.0, False, Verdict.OK),
        (65.0, False, Verdict.FAULT),
        (65.0, True, Verdict.OK),  # a jump's flight may pitch the body further ...
        (85.0, True, Verdict.FAULT),  # ... but not as far as a robot lying on its side
        (170.0, True, Verdict.FAULT),
    ],
)
def test_the_tilt_limit_is_larger_in_flight(tilt_deg: float, airborne: bool, verdict: Verdict) -> None:
    monitor = BodyTilt(LIMITS.max_tilt_deg, LIMITS.max_flight_tilt_deg, JOINTS.contact_threshold_n)
    _, status = monitor(DEFAULT, _context(_state(0.0, tilt_deg=tilt_deg, airborne=airborne)))
    assert status.verdict is verdict, status


# ----------------------------------------------------------------------------------- chain
@pytest.mark.parametrize(
    ("state_kwargs", "action", "filter_name"),
    [
        ({}, np.full(12, math.nan), "finite"),
        ({"joint_pos": np.full(12, math.nan)}, np.zeros(12), "finite"),
        ({"joint_vel": np.full(12, 40.0)}, np.zeros(12), "joint_velocity"),
        ({"tilt_deg": 61.0}, np.zeros(12), "tilt"),
    ],
)
def test_each_joint_fault_latches_and_damps_every_joint(
    state_kwargs: dict[str, Any], action: np.ndarray, filter_name: str
) -> None:
    chain, t = _armed_chain()
    t += DT
    out = chain.step(_state(t, **state_kwargs), JOINTS.targets(action), t, action_stamp_s=t)
    assert out.mode is Mode.FALLBACK and out.fault is not None and out.fault.filter == filter_name, out
    assert np.isnan(out.action).all()
    for _ in range(10):  # latched: healthy inputs do not give the policy the joints back
        t += DT
        out = chain.step(_state(t), JOINTS.targets(np.zeros(12)), t, action_stamp_s=t)
        assert out.mode is Mode.FALLBACK and np.isnan(out.action).all()
        assert not any("unusable" in s.reason for s in out.statuses), out.statuses
    chain.reset()
    assert chain.mode is Mode.DISARMED
    assert not chain.arm(bundle_ok=True, now_s=t + 0.5)[0], "re-arming needs a fresh proof of life"


def test_a_dead_policy_damps_every_joint_within_the_action_timeout_and_a_period() -> None:
    chain, t = _armed_chain()
    last_action_s = t
    while chain.mode is Mode.POLICY:
        t += DT
        out = chain.step(_state(t), JOINTS.targets(np.zeros(12)), t, action_stamp_s=last_action_s)
    assert out.fault is not None and out.fault.filter == "stale_action"
    assert t - last_action_s <= LIMITS.action_timeout_s + DT + 1e-9
    assert np.isnan(out.action).all()


def test_policy_targets_are_clipped_and_arming_refuses_a_tilted_robot() -> None:
    chain, t = _armed_chain()
    t += DT
    bent = DEFAULT.copy()
    bent[1::3] = 0.4  # thighs 0.5 rad behind their default
    out = chain.step(_state(t, bent), JOINTS.targets(np.full(12, 10.0)), t, action_stamp_s=t)
    # Targets 1.25 rad (hips), 2.5 rad (thighs, calves) past the default: the thighs' 3 rad error asks for
    # 60 N m (55 allowed), the hips' 25 N m (20); the hips and calves end past their range.
    assert out.mode is Mode.POLICY and [s.filter for s in out.statuses] == ["torque", "joint_range"]
    np.testing.assert_allclose(out.action[1::3], 0.4 + MAX_TORQUE[1::3] / JOINTS.kp, rtol=1e-6)
    np.testing.assert_allclose(out.action[0::3], HIGH[0::3], rtol=1e-6)
    np.testing.assert_allclose(out.action[2::3], HIGH[2::3], rtol=1e-6)
    tilted = joint_safety_chain(LIMITS)
    for k in range(60):
        tilted.step(_state(k * DT, tilt_deg=70.0), DEFAULT, k * DT, action_stamp_s=k * DT)
    armed, reason = tilted.arm(bundle_ok=True, now_s=59 * DT)
    assert not armed and "tilted 70.0 deg" in reason


healthy_joint_events = st.fixed_dictionaries(
    {
        "action": st.lists(st.floats(-15.0, 15.0), min_size=12, max_size=12),
        "nan_action": st.just(False),
        "offset": st.floats(-0.5, 0.5),
        "joint_vel": st.floats(-10.0, 10.0),
        "tilt_deg": st.floats(0.0, 40.0),
        "airborne": st.booleans(),
        "state_age_s": st.just(0.0),
        "command": st.sampled_from((None, None, "arm")),
    }
)
odd_joint_events = st.fixed_dictionaries(
    {
        "action": st.lists(st.floats(-15.0, 15.0), min_size=12, max_size=12),
        "nan_action": st.booleans(),
        "offset": st.floats(-0.5, 0.5),
        "joint_vel": st.floats(-35.0, 35.0),
        "tilt_deg": st.floats(0.0, 180.0),
        "airborne": st.booleans(),
        "state_age_s": st.sampled_from((0.0, 0.2)),
        "command": st.sampled_from((None, "arm", "estop", "reset")),
    }
)


@settings(deadline=None, max_examples=100)
@given(events=st.lists(st.one_of(healthy_joint_events, healthy_joint_events, odd_joint_events), min_size=5,
                       max_size=60))  # fmt: skip
def test_every_output_is_damped_or_inside_the_joint_range(events: list[dict[str, Any]]) -> None:
    limits = dataclasses.replace(LIMITS, proof_of_life_hz=20.0, proof_of_life_s=0.05)
    chain = joint_safety_chain(limits)
    for k, event in enumerate(events):
        t = (k + 1) * DT
        if event["command"] == "arm":
            chain.arm(bundle_ok=True, now_s=t)
        elif event["command"] == "estop":
            chain.estop()
        elif event["command"] == "reset":
            chain.reset()
        state = _state(t - event["state_age_s"], DEFAULT + event["offset"], np.full(12, event["joint_vel"]),
                       event["tilt_deg"], event["airborne"])  # fmt: skip
        action = np.full(12, np.nan) if event["nan_action"] else np.asarray(event["action"])
        out = chain.step(state, JOINTS.targets(action), t, action_stamp_s=t)
        assert out.action.shape == (12,)
        if out.mode is not Mode.POLICY:
            assert np.isnan(out.action).all(), out
            continue
        assert np.isfinite(out.action).all()
        assert (out.action >= LOW - 1e-6).all() and (out.action <= HIGH + 1e-6).all()
        torque = JOINTS.kp * (out.action - state.joint_pos) - JOINTS.kd * state.joint_vel
        # Within the torque limit, unless the joint range (applied last) had the final word.
        at_range = np.isclose(out.action, LOW, atol=1e-6) | np.isclose(out.action, HIGH, atol=1e-6)
        assert ((np.abs(torque) <= MAX_TORQUE + 1e-3) | at_range).all()


# ----------------------------------------------------------------------------------- profile
def test_the_a1_profile_is_the_model_the_policy_was_trained_on() -> None:
    robot, sim, env = build_a1(), QuadrupedSimConfig(), QuadrupedJumpEnvConfig()
    assert JOINTS.names == JOINT_NAMES and JOINTS.foot_names == FOOT_NAMES
    np.testing.assert_allclose(np.stack((LOW, HIGH), axis=-1), robot.joint_range)
    np.testing.assert_allclose(MAX_TORQUE, robot.torque_limit)
    np.testing.assert_allclose(DEFAULT, A1Config().standing_joint_pos)
    assert (JOINTS.kp, JOINTS.kd) == (A1Config().kp, A1Config().kd)
    assert (JOINTS.action_scale, JOINTS.contact_threshold_n) == (sim.action_scale, sim.contact_threshold_n)
    assert (JOINTS.hip_action_scale, JOINTS.action_clip) == (env.hip_action_scale, env.action_clip)
    urdf = ET.parse(os.path.join(pybullet_data.getDataPath(), "a1", "a1.urdf")).getroot()
    velocity = {j.get("name"): float(j.find("limit").get("velocity")) for j in urdf.iter("joint")
                if j.find("limit") is not None}  # fmt: skip
    for name, limit in zip(JOINTS.names, LIMITS.max_joint_velocity_radps, strict=True):
        urdf_name = name.replace("thigh", "upper").replace("calf", "lower")
        assert limit == velocity[urdf_name], name
    # The bundle the jump recipe exports fits this robot.
    spec = jump_policy_spec(QuadrupedJumpTrainConfig(), 50.0, 0.25)
    low = [f.low for f in spec.action_fields for _ in range(f.size)]
    high = [f.high for f in spec.action_fields for _ in range(f.size)]
    check_joints_against_bundle(LIMITS, "unitree_a1", spec.robot, spec.safety_limits, low, high)


def test_a_bundle_for_other_joints_or_another_robot_is_refused_naming_every_mismatch() -> None:
    spec = jump_policy_spec(QuadrupedJumpTrainConfig(), 50.0, 0.25)
    trained = dict(spec.safety_limits)
    trained.update(kp=25.0, action_scale=0.3, default_joint_pos_rad=[0.0, 0.8, -1.6] * 4)
    with pytest.raises(SafetyConfigError) as err:
        check_joints_against_bundle(LIMITS, "unitree_a1", "unitree_go1", trained, [-10.0] * 12, [10.0] * 12)
    for fragment in (
        "'unitree_go1'",
        "kp is 20.0 here, the bundle was trained with 25.0",
        "action_scale is 0.25 here, the bundle was trained with 0.3",
        "default_pos_rad",
    ):
        assert fragment in str(err.value)
    with pytest.raises(SafetyConfigError, match="4 actions, this robot 12 joints"):
        check_joints_against_bundle(LIMITS, "unitree_a1", "unitree_a1", {}, [-1.0] * 4, [1.0] * 4)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"max_tilt_deg": None}, "missing key(s) ['max_tilt_deg']"),
        ({"max_roll_deg": 10.0}, "unknown key(s) ['max_roll_deg']"),
        ({"joint_low_rad": [-0.8, 1.0, -2.7] * 4}, "FR_thigh_joint: default pose 0.9 is outside it"),
        ({"max_torque_nm": [20.0] * 11}, "needs 12 values"),
        ({"max_flight_tilt_deg": 45.0}, "[max_tilt_deg, 180]"),
    ],
)
def test_bad_joint_limits_are_refused_naming_the_field(change: dict[str, Any], fragment: str) -> None:
    profile = load_robot_profile(str(PROFILE))
    safety = {k: v for k, v in {**profile.safety, **change}.items() if v is not None}
    with pytest.raises(SafetyConfigError) as err:
        JointSafetyLimits.from_mapping(safety, JOINTS, source="a1.yaml (safety:)")
    assert fragment in str(err.value) and "a1.yaml" in str(err.value)
    with pytest.raises(ValueError, match="default_pos_rad needs 12 values"):
        dataclasses.replace(JOINTS, default_pos_rad=(0.0,) * 3)


# ----------------------------------------------------------------------------------- backend
def test_the_simulated_a1_is_held_until_a_target_then_sits_down_when_damped() -> None:
    robot = SimulatedQuadruped(JOINTS, DT)
    start = robot.truth.base_pos_w.copy()
    t = 0.0
    robot.command(np.full(12, np.nan))  # what a disarmed graph sends
    for _ in range(25):
        t += DT
        robot.advance(t)
    np.testing.assert_array_equal(robot.truth.base_pos_w, start)  # held, as on a stand
    targets = DEFAULT + 0.05
    robot.command(targets)
    for _ in range(25):
        t += DT
        state = robot.advance(t)
    np.testing.assert_allclose(robot.truth.joint_target[0], targets)
    assert robot.truth.base_pos_w[0, 2] > 0.22 and not state.airborne(JOINTS.contact_threshold_n)
    robot.command(np.full(12, np.nan))
    assert robot.damped.all()
    for _ in range(75):
        t += DT
        state = robot.advance(t)
    assert robot.truth.base_pos_w[0, 2] < 0.1, "damped joints let the robot sit down"
    np.testing.assert_allclose(state.joint_torque, -JOINTS.damping_kd * state.joint_vel)
    with pytest.raises(ValueError, match="infinite"):
        robot.command(np.full(12, np.inf))
    robot.close()


# ----------------------------------------------------------------------------------- deployment
def test_the_quadruped_deployment_starts_its_three_nodes_with_the_robot() -> None:
    config = load_deployment(DEPLOYMENT, "/some/bundle", ["nodes.policy.landing_x_m=0.5"])
    specs = {s.name: s for s in node_list(config)}
    assert list(specs) == ["policy", "safety", "bridge"]  # bridge last
    assert [s.executable for s in specs.values()] == ["jump_policy_node", "joint_safety_node",
                                                       "quadruped_bridge_node"]  # fmt: skip
    assert all(s.parameters["robot"] == str(PROFILE) for s in specs.values())
    assert all(s.parameters["control_rate_hz"] == 50.0 for s in specs.values())
    assert specs["policy"].parameters["landing_x_m"] == 0.5
    assert specs["safety"].parameters["bundle"] == "/some/bundle"


def test_the_graph_key_picks_the_deployment_and_a_wrong_one_is_named(tmp_path: Any) -> None:
    bad = tmp_path / "deploy.yaml"
    bad.write_text("graph: hexapod\n")
    with pytest.raises(ConfigError, match=r"'hexapod' is not one of \['quadrotor', 'quadruped'\]"):
        load_deployment(bad)
    with pytest.raises(ConfigError, match="allowed"):
        load_deployment(DEPLOYMENT, overrides=["nodes.reference.mode=hover"])  # a quadrotor node
    with pytest.raises(ValueError, match="does not match DeploymentConfig"):
        DeploymentConfig(graph="quadruped")
    with pytest.raises(ConfigError, match="no 'joints:' section"):
        joint_limits(load_robot_profile(str(REPO_ROOT / "hardware/crazyflie_sim.yaml")))


def test_a_joint_profile_needs_every_field() -> None:
    profile = load_robot_profile(str(PROFILE))
    with pytest.raises(ValueError, match="damping_kd must be > 0"):
        JointProfile(**{**profile.joints, "damping_kd": 0.0})
