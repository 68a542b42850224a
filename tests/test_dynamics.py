"""Physics checks of the quadrotor simulator against hand-derived numbers.

Each test pins a number that a wrong sign, frame, quaternion order or integrator would change, in the
conventions of ANCHORS section 1 (world z-up, body FLU, quaternion wxyz body-to-world, rotors FR, BR,
BL, FL with drag-torque directions -1, +1, -1, +1).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from robotrl.envs.quadrotor.dynamics import (
    ANGVEL_B,
    LINVEL_W,
    MOTORS,
    POS_W,
    QUAT_WXYZ,
    QuadrotorDynamics,
    hover_state,
    quat_from_axis_angle,
    quat_multiply,
    quat_to_rotmat,
)
from robotrl.envs.quadrotor.params import GRAVITY, QuadrotorParams
from robotrl.envs.quadrotor.platforms import RaptorDistribution, load_platform

DT = 0.01


def _crazyflie(num_envs: int = 1) -> QuadrotorParams:
    return load_platform("crazyflie").repeat(num_envs)


def _without_idle_thrust(params: QuadrotorParams) -> QuadrotorParams:
    """The Crazyflie's thrust curve has c0 > 0; with c0 = 0 a motor state of 0 means no force at all."""
    curve = params.thrust_curve.clone()
    curve[:, 0] = 0.0
    return dataclasses.replace(params, thrust_curve=curve)


def _float64(params: QuadrotorParams) -> QuadrotorParams:
    return QuadrotorParams(**{f.name: getattr(params, f.name).double() for f in dataclasses.fields(params)})


def _constant_action(action: float) -> torch.Tensor:
    return torch.full((1, 4), action)


def _rollout(
    dynamics: QuadrotorDynamics, state: torch.Tensor, action: torch.Tensor, steps: int
) -> torch.Tensor:
    for _ in range(steps):
        state = dynamics.step(state, action)
    return state


def _axis_angle(axis: tuple[float, float, float], angle_deg: float) -> torch.Tensor:
    return quat_from_axis_angle(torch.tensor([axis]), torch.tensor([math.radians(angle_deg)]))


def test_crazyflie_holds_altitude_at_its_hover_action() -> None:
    params = _crazyflie()
    dynamics = QuadrotorDynamics(params, DT)
    final = _rollout(dynamics, hover_state(params), params.hover_action().unsqueeze(-1).expand(-1, 4), 500)
    assert final[:, POS_W].abs().max() < 0.01
    assert final[:, LINVEL_W].abs().max() < 0.01
    assert final[:, QUAT_WXYZ.start] == pytest.approx(1.0, abs=1e-6)


def test_sampled_raptor_quadrotors_hover_at_their_own_hover_action() -> None:
    params = RaptorDistribution().sample(256, torch.Generator().manual_seed(0))
    dynamics = QuadrotorDynamics(params, DT)
    final = _rollout(dynamics, hover_state(params), params.hover_action().unsqueeze(-1).expand(-1, 4), 500)
    assert final[:, POS_W].abs().max() < 0.01
    assert final[:, ANGVEL_B].abs().max() < 1e-3


def test_free_fall_accelerates_at_g() -> None:
    params = _without_idle_thrust(_crazyflie())
    state = hover_state(params)
    state[:, MOTORS] = 0.0
    final = _rollout(QuadrotorDynamics(params, DT), state, _constant_action(-1.0), 100)
    assert final[0, POS_W].tolist() == pytest.approx([0.0, 0.0, -0.5 * GRAVITY], abs=1e-4)
    assert final[0, LINVEL_W].tolist() == pytest.approx([0.0, 0.0, -GRAVITY], abs=1e-4)
    assert final[0, MOTORS].abs().max() == 0.0


@pytest.mark.parametrize(
    ("attitude", "thrust_direction_w"),
    [
        # Rolling +30 deg about body x turns body z towards world -y.
        (_axis_angle((1.0, 0.0, 0.0), 30.0), (0.0, -0.5, math.sqrt(0.75))),
        # The same roll, then yawed +90 deg about world z: body z now leans towards world +x.
        (
            quat_multiply(_axis_angle((0.0, 0.0, 1.0), 90.0), _axis_angle((1.0, 0.0, 0.0), 30.0)),
            (0.5, 0.0, math.sqrt(0.75)),
        ),
    ],
)
def test_thrust_acts_along_body_z_rotated_into_the_world(
    attitude: torch.Tensor, thrust_direction_w: tuple[float, float, float]
) -> None:
    params = _crazyflie()
    state = hover_state(params)
    state[:, QUAT_WXYZ] = attitude
    state[:, MOTORS] = 1.0
    t = 0.5
    final = _rollout(QuadrotorDynamics(params, DT), state, _constant_action(1.0), round(t / DT))
    thrust_accel = float(4.0 * params.max_thrust_per_rotor[0] / params.mass[0])
    expected = [
        0.5 * t * t * (thrust_accel * d - (GRAVITY if i == 2 else 0.0))
        for i, d in enumerate(thrust_direction_w)
    ]
    assert final[0, POS_W].tolist() == pytest.approx(expected, abs=1e-4)
    assert final[0, QUAT_WXYZ].tolist() == pytest.approx(attitude[0].tolist(), abs=1e-6)


@pytest.mark.parametrize(
    ("name", "more_thrust", "axis"),
    [
        # Drag torque +k f on BR and FL, -k f on FR and BL: speeding up BR and FL yaws the body +z.
        ("yaw", (-1.0, 1.0, -1.0, 1.0), 2),
        # Right rotors (y = -0.028 m) pushing harder lift the right side: a negative roll about +x.
        ("roll", (1.0, 1.0, -1.0, -1.0), 0),
        # Front rotors (x = +0.028 m) pushing harder lift the nose: a negative pitch about +y.
        ("pitch", (1.0, -1.0, -1.0, 1.0), 1),
    ],
)
def test_differential_thrust_turns_the_body_the_right_way(
    name: str, more_thrust: tuple[float, ...], axis: int
) -> None:
    params = _crazyflie()
    dynamics = QuadrotorDynamics(params, DT)
    command = params.hover_command() + 0.1 * torch.tensor([more_thrust])
    state = hover_state(params)
    state[:, MOTORS] = command
    omega_dot = dynamics.derivative(state, command, None)[0, ANGVEL_B]

    thrust_high, thrust_low = params.rotor_thrust(
        params.hover_command().unsqueeze(-1) + torch.tensor([[0.1, -0.1]])
    )[0]
    arm = 0.028  # |x| = |y| of every Crazyflie rotor
    # Torque per newton of thrust moved from the "less" pair to the "more" pair.
    lever = {"yaw": 2.0 * float(params.rotor_torque_constant[0]), "roll": -2.0 * arm, "pitch": -2.0 * arm}[
        name
    ]
    torque = lever * float(thrust_high - thrust_low)
    expected = [0.0, 0.0, 0.0]
    expected[axis] = torque / float(params.inertia[0, axis, axis])
    assert omega_dot.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-3)

    action = 2.0 * command - 1.0  # command range [0, 1]
    final = _rollout(dynamics, state, action, 10)  # 0.1 s: well short of rolling over
    rot = quat_to_rotmat(final[0, QUAT_WXYZ])
    velocity = final[0, LINVEL_W]
    if name == "yaw":
        w, x, y, z = final[0, QUAT_WXYZ].tolist()
        assert math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)) > 0.05
    elif name == "roll":
        assert rot[2, 1] < -0.05  # body +y (left) now points down: the right side is up ...
        assert velocity[1] > 0.0  # ... so the thrust tilts left and the quad drifts to world +y.
    else:
        assert rot[2, 0] > 0.05  # the nose points up ...
        assert velocity[0] < 0.0  # ... and the quad drifts backwards.


def test_a_weak_front_right_rotor_sinks_rolls_right_pitches_down_and_yaws_left() -> None:
    """Env 1 flies with its front-right rotor at 70 %; env 0 is the nominal twin and must not notice."""
    params = _crazyflie(2)
    scale = torch.ones(2, 4)
    scale[1, 0] = 0.7
    params = dataclasses.replace(params, rotor_thrust_scale=scale)
    assert params.thrust_to_weight[1] == pytest.approx(float(params.thrust_to_weight[0]) * 3.7 / 4.0)
    dynamics = QuadrotorDynamics(params, DT)
    state = hover_state(params)
    command = params.hover_command().unsqueeze(-1).expand(2, 4)
    slope = dynamics.derivative(state, command, None)
    assert slope[0, LINVEL_W].abs().max() < 1e-4 and slope[0, ANGVEL_B].abs().max() < 1e-2

    # The rotor carries a quarter of the weight at hover; it loses 30 % of that.
    lost = 0.3 * float(params.mass[0]) * GRAVITY / 4.0
    assert slope[1, LINVEL_W].tolist() == pytest.approx([0.0, 0.0, -lost / float(params.mass[0])], abs=1e-4)
    # FR sits at (+0.028, -0.028): less lift there is a torque +0.028 lost about x and about y; its drag
    # torque (direction -1) shrinks, which leaves +k lost about z.
    arm, k = 0.028, float(params.rotor_torque_constant[0])
    torque = (arm * lost, arm * lost, k * lost)
    expected = [t / float(params.inertia[1, i, i]) for i, t in enumerate(torque)]
    assert slope[1, ANGVEL_B].tolist() == pytest.approx(expected, rel=1e-3)

    final = _rollout(dynamics, state, 2.0 * command - 1.0, 10)
    rot = quat_to_rotmat(final[1, QUAT_WXYZ])
    assert rot[2, 1] > 0.05  # body +y (left) points up: the right side dropped
    assert rot[2, 0] < -0.05  # the nose points down
    w, x, y, z = final[1, QUAT_WXYZ].tolist()
    assert math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)) > 0.0  # yawed left (+z)
    assert final[1, LINVEL_W][2] < 0.0
    assert final[0, POS_W].abs().max() < 1e-4 and final[0, ANGVEL_B].abs().max() < 1e-3


def test_rotor_thrust_scale_must_have_one_factor_per_rotor() -> None:
    with pytest.raises(ValueError, match=r"rotor_thrust_scale must have shape \(3, 4\)"):
        dataclasses.replace(_crazyflie(3), rotor_thrust_scale=torch.ones(3))


def test_torque_free_spin_conserves_angular_momentum_and_energy() -> None:
    inertia = 1e-5 * torch.tensor([[[1.2, 0.15, -0.1], [0.15, 1.6, 0.2], [-0.1, 0.2, 2.4]]])
    params = dataclasses.replace(_without_idle_thrust(_crazyflie()), inertia=inertia)
    dynamics = QuadrotorDynamics(params, DT)
    state = hover_state(params)
    state[:, MOTORS] = 0.0
    state[:, ANGVEL_B] = torch.tensor([4.0, -6.0, 9.0])
    action = _constant_action(-1.0)

    def momentum_and_energy(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        omega = s[0, ANGVEL_B].double()
        body_momentum = inertia[0].double() @ omega
        return quat_to_rotmat(s[0, QUAT_WXYZ]).double() @ body_momentum, 0.5 * omega @ body_momentum

    momentum0, energy0 = momentum_and_energy(state)
    worst_momentum = worst_energy = 0.0
    for _ in range(200):
        state = dynamics.step(state, action)
        momentum, energy = momentum_and_energy(state)
        worst_momentum = max(worst_momentum, float((momentum - momentum0).norm() / momentum0.norm()))
        worst_energy = max(worst_energy, float(abs(energy - energy0) / energy0))
    assert worst_momentum < 1e-4
    assert worst_energy < 1e-4
    # The body rates must really have moved (precession), or the check above proves nothing.
    assert (state[0, ANGVEL_B] - torch.tensor([4.0, -6.0, 9.0])).norm() > 1.0


@pytest.mark.parametrize(
    ("start", "action", "expected"), [(0.0, 1.0, 1.0 - math.exp(-1.0)), (1.0, -1.0, math.exp(-1.0))]
)
def test_motor_step_reaches_one_time_constant_point(start: float, action: float, expected: float) -> None:
    params = _crazyflie()
    tau = float(params.motor_tau_rising[0] if action > 0 else params.motor_tau_falling[0])
    state = hover_state(params)
    state[:, MOTORS] = start
    final = _rollout(QuadrotorDynamics(params, dt=tau / 20), state, _constant_action(action), 20)
    assert final[0, MOTORS].tolist() == pytest.approx([expected] * 4, rel=0.01)


def test_rk4_is_exact_for_constant_thrust() -> None:
    params = _crazyflie()
    state = hover_state(params)
    state[:, MOTORS] = 1.0
    final = _rollout(QuadrotorDynamics(params, DT), state, _constant_action(1.0), 100)
    accel = float(4.0 * params.max_thrust_per_rotor[0] / params.mass[0]) - GRAVITY
    assert float(final[0, POS_W.stop - 1]) == pytest.approx(0.5 * accel, abs=1e-4)
    assert float(final[0, LINVEL_W.stop - 1]) == pytest.approx(accel, abs=1e-4)


def _motor_error(dt: float, duration: float) -> tuple[float, float]:
    """Max error of the motor state against exp(-t/tau), and against RK4's own closed form, float64."""
    params = _float64(_crazyflie())
    dynamics = QuadrotorDynamics(params, dt)
    tau = float(params.motor_tau_rising[0])
    z = dt / tau
    rk4_factor = 1.0 - z + z**2 / 2.0 - z**3 / 6.0 + z**4 / 24.0  # RK4's one-step map of du/dt = -u/tau
    state = hover_state(params).double()
    state[:, MOTORS] = 0.0
    action = torch.ones(1, 4, dtype=torch.float64)
    error_exact = error_rk4 = 0.0
    for n in range(1, round(duration / dt) + 1):
        state = dynamics.step(state, action)
        u = float(state[0, MOTORS.start])
        error_exact = max(error_exact, abs(u - (1.0 - math.exp(-n * dt / tau))))
        error_rk4 = max(error_rk4, abs(u - (1.0 - rk4_factor**n)))
    return error_exact, error_rk4


def test_rk4_motor_response_is_fourth_order() -> None:
    error_coarse, rk4_coarse = _motor_error(DT, 0.3)
    error_fine, rk4_fine = _motor_error(DT / 2, 0.3)
    # Classical RK4 reproduces its own amplification polynomial to rounding ...
    assert max(rk4_coarse, rk4_fine) < 1e-12
    # ... whose global error for the 55 ms rising constant is about z^4 / (120 e) = 3.3e-6 at dt = 10 ms.
    assert error_coarse < 4e-6
    assert 14.0 < error_coarse / error_fine < 18.0


def test_step_result_feeds_back_without_changing_values() -> None:
    params = RaptorDistribution().sample(8, torch.Generator().manual_seed(1))
    dynamics = QuadrotorDynamics(params, DT)
    action = torch.rand(8, 4, generator=torch.Generator().manual_seed(2)) * 2.0 - 1.0
    once = dynamics.step(hover_state(params), action)
    assert not once.is_contiguous()  # the [STATE_DIM, N] buffer seen as [N, STATE_DIM]
    assert torch.equal(dynamics.step(once, action), dynamics.step(once.contiguous(), action))


def test_compiled_step_matches_eager() -> None:
    generator = torch.Generator().manual_seed(3)
    params = RaptorDistribution().sample(64, generator)
    eager = QuadrotorDynamics(params, DT)
    compiled = QuadrotorDynamics(params, DT, use_compile=True)
    state = hover_state(params)
    state[:, QUAT_WXYZ] = quat_from_axis_angle(
        torch.nn.functional.normalize(torch.randn(64, 3, generator=generator), dim=-1),
        0.5 * torch.rand(64, generator=generator),
    )
    state[:, ANGVEL_B] = torch.randn(64, 3, generator=generator)
    action = params.hover_action().unsqueeze(-1) + 0.1 * torch.randn(64, 4, generator=generator)
    force_w = 0.1 * GRAVITY * params.mass.unsqueeze(-1) * torch.randn(64, 3, generator=generator)
    state_eager = state_compiled = state
    for _ in range(20):
        state_eager = eager.step(state_eager, action, force_w)
        state_compiled = compiled.step(state_compiled, action, force_w)
    torch.testing.assert_close(state_compiled, state_eager, rtol=1e-5, atol=1e-5)

    # New parameter rows reach the compiled step (they are inputs, not baked-in constants).
    other = RaptorDistribution().sample(64, generator)
    eager.set_params(other)
    compiled.set_params(other)
    torch.testing.assert_close(
        compiled.step(state, action, force_w), eager.step(state, action, force_w), rtol=1e-5, atol=1e-5
    )


def test_set_params_after_partial_replacements_steps_like_a_fresh_model() -> None:
    """set_params rebuilds only the terms whose tensors changed: after a payload, a weak rotor and an
    in-place edit of the held params, the model steps exactly as one built from scratch."""
    generator = torch.Generator().manual_seed(3)
    params = RaptorDistribution().sample(32, generator)
    model = QuadrotorDynamics(params, DT)
    state = hover_state(params)
    state[:, ANGVEL_B] = torch.randn(32, 3, generator=generator)
    action = params.hover_action().unsqueeze(-1) + 0.1 * torch.randn(32, 4, generator=generator)
    heavier = dataclasses.replace(params, mass=params.mass * 1.3)
    scale = params.rotor_thrust_scale.clone()
    scale[:, 0] = 0.7
    weak = dataclasses.replace(heavier, rotor_thrust_scale=scale)
    for current in (heavier, weak):
        model.set_params(current)
        torch.testing.assert_close(
            model.step(state, action), QuadrotorDynamics(current, DT).step(state, action), rtol=0, atol=0
        )
    weak.inertia.mul_(2.0)  # rows changed in place: the held object handed back rebuilds everything
    model.set_params(weak)
    torch.testing.assert_close(
        model.step(state, action), QuadrotorDynamics(weak, DT).step(state, action), rtol=0, atol=0
    )
