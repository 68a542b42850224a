"""Robot-side pieces without ROS: state conversions, the operator's pilot and the command arbiter."""

from __future__ import annotations

import numpy as np
import torch

from robotrl.control.geometric import GeometricController, NominalQuadrotor
from robotrl.control.state import (
    RobotState,
    quadrotor_observation,
    quaternion_wxyz_to_rotation,
    rotation_to_quaternion_wxyz,
)
from robotrl.envs.quadrotor.dynamics import quat_to_rotmat
from robotrl.envs.quadrotor.observations import raptor_observation
from robotrl.hil.intervention import CommandArbiter, OperatorPilot


def test_quaternion_and_rotation_round_trip_at_any_angle() -> None:
    rng = np.random.default_rng(0)
    quats = rng.normal(size=(500, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    quats *= np.sign(quats[:, :1])
    # Near-180-degree turns are where a naive trace formula loses precision.
    quats[:3] = [(1e-9, 1.0, 0.0, 0.0), (1e-9, 0.0, 1.0, 0.0), (1e-9, 0.0, 0.0, 1.0)]
    for q in quats:
        rot = quaternion_wxyz_to_rotation(q)
        np.testing.assert_allclose(rot, quat_to_rotmat(torch.tensor(q)).numpy(), atol=1e-6)
        np.testing.assert_allclose(
            quaternion_wxyz_to_rotation(rotation_to_quaternion_wxyz(rot)), rot, atol=1e-9
        )


def test_the_robot_side_observation_matches_the_simulators() -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    state = RobotState(
        0.0, rng.normal(size=3), rng.normal(size=3), quaternion_wxyz_to_rotation(q), rng.normal(size=3)
    )
    target, target_vel, prev = rng.normal(size=3), rng.normal(size=3), rng.uniform(-1, 1, 4)
    sim_state = torch.zeros(1, 17)
    sim_state[0, 0:3] = torch.tensor(state.position_w)
    sim_state[0, 3:7] = torch.tensor(q)
    sim_state[0, 7:10] = torch.tensor(state.velocity_w)
    sim_state[0, 10:13] = torch.tensor(state.angular_velocity_b)
    expected = raptor_observation(
        sim_state, *(torch.tensor(v[None]) for v in (target, target_vel, prev))
    ).numpy()[0]
    np.testing.assert_allclose(quadrotor_observation(state, target, target_vel, prev), expected, atol=1e-5)


def pilot() -> OperatorPilot:
    controller = GeometricController(NominalQuadrotor.from_platform_yaml("crazyflie"), dt=0.01)
    return OperatorPilot(controller, deadman_button=4, axes=(3, 2, 1), max_speed_mps=0.5, joy_timeout_s=0.2)


def test_the_operator_flies_only_while_the_deadman_is_held_and_the_stick_is_fresh() -> None:
    p = pilot()
    assert not p.human_active(0.0)  # no joystick yet
    p.on_joy(np.zeros(4), np.array([0, 0, 0, 0, 1]), stamp_s=1.0)
    assert p.human_active(1.1)
    assert not p.human_active(1.3)  # the joystick went silent for longer than joy_timeout_s
    p.on_joy(np.zeros(4), np.array([0, 0, 0, 0, 0]), stamp_s=2.0)
    assert not p.human_active(2.0)  # deadman released


def test_a_takeover_starts_at_the_robot_and_the_stick_moves_the_setpoint() -> None:
    p = pilot()
    state = RobotState(0.0, position_w=np.array((0.3, -0.2, 1.0)))
    p.on_joy(np.array((0.0, 0.0, 0.0, 1.0)), np.array([0, 0, 0, 0, 1]), stamp_s=0.0)  # full +x
    assert p.human_active(0.0)
    action = p.human_action(state, np.zeros(4), now_s=0.0)
    np.testing.assert_allclose(p.setpoint_w, state.position_w)  # no jump at takeover
    assert action.shape == (4,) and np.all(np.abs(action) <= 1.0)
    p.human_action(state, action, now_s=0.1)
    np.testing.assert_allclose(p.setpoint_w, state.position_w + np.array((0.05, 0.0, 0.0)))  # 0.5 m/s, 0.1 s
    assert p.takeovers == 1
    p.on_joy(np.zeros(4), np.zeros(5), stamp_s=0.2)
    assert not p.human_active(0.2)
    p.on_joy(np.zeros(4), np.array([0, 0, 0, 0, 1]), stamp_s=0.3)
    assert p.human_active(0.3)
    p.human_action(state, action, now_s=0.3)
    assert p.takeovers == 2


def test_operator_commands_win_until_they_stop_coming() -> None:
    arbiter = CommandArbiter(human_timeout_s=0.015)
    assert not arbiter.human_active(0.0)
    arbiter.note_human(1.0)
    assert arbiter.human_active(1.01)
    assert not arbiter.human_active(1.02)
