"""The safety chain: every output bounded and slew-limited whatever comes in, each fault hands over to the
fallback, e-stop and arming behave, limits are checked against the bundle, and the landing fallback
lands a tilted, moving simulated Crazyflie inside the geofence."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robotrl.control.geometric import GeometricController, NominalQuadrotor
from robotrl.control.state import RobotState
from robotrl.envs.quadrotor.dynamics import (
    ANGVEL_B,
    LINVEL_W,
    MOTORS,
    POS_W,
    QUAT_WXYZ,
    quat_from_axis_angle,
    quat_to_rotmat,
)
from robotrl.envs.quadrotor.env import QuadrotorEnv, QuadrotorEnvConfig
from robotrl.safety import (
    LandingFallback,
    Mode,
    SafetyChain,
    SafetyConfigError,
    SafetyLimits,
    check_against_bundle,
)

HARDWARE_FILE = Path(__file__).resolve().parents[1] / "hardware" / "crazyflie_sim.yaml"
LIMITS = SafetyLimits.from_yaml(HARDWARE_FILE)
DT = 0.01
STOP = np.asarray(LIMITS.stop_action, np.float32)
ACTION = np.full(4, 0.2)
BUNDLE_LIMITS = {
    "max_position_error_m": LIMITS.max_tracking_error_m,
    "max_linear_velocity_mps": LIMITS.max_speed_mps,
    "max_angular_velocity_radps": LIMITS.max_angular_velocity_radps,
    "init_tilt_deg": 30.0,
}


def _limits(**overrides: Any) -> SafetyLimits:
    return dataclasses.replace(LIMITS, **overrides)


def _rotation_x(angle_deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _state(
    stamp_s: float,
    position: tuple[float, float, float] = (0.0, 0.0, 1.0),
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0),
    tilt_deg: float = 0.0,
    angular_velocity: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> RobotState:
    return RobotState(
        stamp_s, np.array(position), np.array(velocity), _rotation_x(tilt_deg), np.array(angular_velocity)
    )


def _chain(limits: SafetyLimits = LIMITS) -> SafetyChain:
    controller = GeometricController(NominalQuadrotor.from_platform_yaml("crazyflie"), dt=DT)
    return SafetyChain(limits, LandingFallback(controller, limits))


def _stream(chain: SafetyChain, start_s: float, duration_s: float) -> float:
    """Steps with a fresh action and a fresh state every period; returns the last time."""
    t = start_s
    for k in range(round(duration_s / DT) + 1):
        t = start_s + k * DT
        chain.step(_state(t), ACTION, t, action_stamp_s=t)
    return t


def _armed_chain(limits: SafetyLimits = LIMITS) -> tuple[SafetyChain, float]:
    chain = _chain(limits)
    t = _stream(chain, 0.0, limits.proof_of_life_s)
    armed, reason = chain.arm(bundle_ok=True, now_s=t)
    assert armed, reason
    return chain, t


# ----------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"action_low": (1.0, -1.0, -1.0, -1.0)}, "action_low", "must be < high"),
        ({"action_high": (1.0, 1.0, 1.0)}, "action_high", "needs 4 values"),
        ({"stop_action": (-2.0, -1.0, -1.0, -1.0)}, "stop_action", "must lie in [-1.0, 1.0]"),
        ({"state_timeout_s": -0.1}, "state_timeout_s", "must be > 0"),
        ({"max_speed_mps": float("nan")}, "max_speed_mps", "must be finite"),
        ({"max_tilt_deg": 200.0}, "max_tilt_deg", "(0, 180]"),
        ({"geofence_min_m": (0.0, 0.0, 3.0)}, "geofence_min_m", "z: min 3.0 m must be < max 2.5 m"),
        ({"geofence_max_m": (1.0, 1.0)}, "geofence_max_m", "needs 3 values"),
        ({"proof_of_life_hz": True}, "proof_of_life_hz", "must be a number"),
        ({"action_low": "-1"}, "action_low", "must be a list of numbers"),
    ],
)
def test_a_bad_limit_is_refused_naming_the_field(
    overrides: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(SafetyConfigError, match=f"'{field}'") as err:
        _limits(**overrides)
    assert fragment in str(err.value)


def test_unknown_and_missing_keys_are_listed_with_the_file() -> None:
    section = {f.name: getattr(LIMITS, f.name) for f in dataclasses.fields(LIMITS) if f.name != "source"}
    with pytest.raises(
        SafetyConfigError, match=r"robot.yaml: unknown key\(s\) \['max_sped_mps'\]; allowed: "
    ):
        SafetyLimits.from_mapping({**section, "max_sped_mps": 1.0}, source="robot.yaml")
    del section["action_timeout_s"]
    with pytest.raises(SafetyConfigError, match=r"missing key\(s\) \['action_timeout_s'\]"):
        SafetyLimits.from_mapping(section, source="robot.yaml")
    with pytest.raises(SafetyConfigError, match=r"robot.yaml: safety limit 'state_timeout_s' = 0.0"):
        SafetyLimits.from_mapping({**section, "action_timeout_s": 0.05, "state_timeout_s": 0.0}, "robot.yaml")


def test_the_hardware_file_fits_the_default_training_run() -> None:
    env = QuadrotorEnvConfig()
    trained = {
        "max_position_error_m": env.max_position_error_m,
        "max_linear_velocity_mps": env.max_linear_velocity_mps,
        "max_angular_velocity_radps": env.max_angular_velocity_radps,
        "init_tilt_deg": env.init.tilt_deg,
    }
    check_against_bundle(LIMITS, trained, [-1.0] * 4, [1.0] * 4)


def test_a_robot_looser_than_the_bundle_is_refused_naming_every_field() -> None:
    check_against_bundle(LIMITS, BUNDLE_LIMITS, [-1.0] * 4, [1.0] * 4)  # equal passes
    check_against_bundle(_limits(max_speed_mps=1.0), BUNDLE_LIMITS, [-1.0] * 4, [1.0] * 4)  # tighter too
    check_against_bundle(LIMITS, {}, [-1.0] * 4, [1.0] * 4)  # missing bundle keys are skipped
    looser = _limits(max_speed_mps=3.5, max_tracking_error_m=1.2)
    with pytest.raises(SafetyConfigError) as err:
        check_against_bundle(looser, BUNDLE_LIMITS, [-1.0] * 4, [1.0] * 4)
    message = str(err.value)
    assert "max_speed_mps = 3.5 exceeds the bundle's max_linear_velocity_mps = 3.0" in message
    assert "max_tracking_error_m = 1.2 exceeds the bundle's max_position_error_m = 1.0" in message
    assert "max_angular_velocity_radps" not in message
    assert str(HARDWARE_FILE) in message
    with pytest.raises(
        SafetyConfigError, match=r"action dimension 0: robot bounds \[-1.0, 1.0\] are not inside"
    ):
        check_against_bundle(LIMITS, BUNDLE_LIMITS, [-0.5, -1.0, -1.0, -1.0], [1.0] * 4)
    with pytest.raises(SafetyConfigError, match="4 action dimensions, the bundle 3 low"):
        check_against_bundle(LIMITS, BUNDLE_LIMITS, [-1.0] * 3, [1.0] * 3)


# ----------------------------------------------------------------------------------- property
ODD = (math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0)
values = st.one_of(st.floats(-1.5, 1.5), st.sampled_from(ODD), st.floats(allow_nan=True, allow_infinity=True))


def _states(max_tilt_deg: float, max_speed_mps: float, ages_s: tuple[float, ...]) -> st.SearchStrategy[tuple]:
    return st.builds(
        lambda x, y, z, tilt, speed, age: (age, (x, y, z), (speed, 0.0, 0.0), _rotation_x(tilt), (0.0,) * 3),
        st.floats(-1.9, 1.9),
        st.floats(-1.9, 1.9),
        st.floats(0.0, 2.4),
        st.floats(0.0, max_tilt_deg),
        st.floats(0.0, max_speed_mps),
        st.sampled_from(ages_s),
    )


healthy_states = _states(30.0, 2.0, (0.0,))
nominal_states = _states(70.0, 3.5, (0.0, 0.01, 0.04, 0.2))
odd_states = st.tuples(
    st.one_of(values, st.sampled_from((0.0, 0.06, 10.0))),
    st.tuples(values, values, values),
    st.tuples(values, values, values),
    st.lists(values, min_size=9, max_size=9).map(lambda rows: np.reshape(rows, (3, 3))),
    st.tuples(values, values, values),
)
odd_events = st.fixed_dictionaries(
    {
        "dt": st.one_of(st.just(DT), st.floats(0.0, 0.05), st.floats(0.0, 3.0)),
        "action": st.lists(values, min_size=4, max_size=4),
        "fresh": st.booleans(),
        "state": st.one_of(st.none(), nominal_states, odd_states),
        "reference": st.one_of(st.none(), st.tuples(values, values, values)),
        "command": st.sampled_from((None, None, None, None, "arm", "arm", "reset", "estop")),
    }
)
# Mostly a healthy stream, so that the chain arms and flies and the odd events hit every mode.
healthy_events = st.fixed_dictionaries(
    {
        "dt": st.just(DT),
        "action": st.lists(st.floats(-1.5, 1.5), min_size=4, max_size=4),
        "fresh": st.just(True),
        "state": healthy_states,
        "reference": st.none(),
        "command": st.sampled_from((None, None, None, "arm")),
    }
)
events = st.lists(st.one_of(healthy_events, healthy_events, odd_events), min_size=5, max_size=60)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # absurd inputs must not spam the robot's log
@settings(deadline=None, max_examples=150)
@given(events=events)
def test_every_output_is_finite_bounded_and_slew_limited(events: list[dict[str, Any]]) -> None:
    limits = _limits(proof_of_life_hz=20.0, proof_of_life_s=0.05)
    chain = _chain(limits)
    low, high = np.asarray(limits.action_low), np.asarray(limits.action_high)
    t, previous, previous_t = 0.0, None, 0.0
    for event in events:
        t += event["dt"]
        if event["command"] == "arm":
            chain.arm(bundle_ok=True, now_s=t)
        elif event["command"] == "estop":
            chain.estop()
        elif event["command"] == "reset":
            chain.reset()
        state = None
        if event["state"] is not None:
            age, position, velocity, rotation, rates = event["state"]
            with np.errstate(all="ignore"):
                state = RobotState(t - age, np.array(position), np.array(velocity), rotation, np.array(rates))
        stamp = t if event["fresh"] else None
        out = chain.step(state, event["action"], t, event["reference"], action_stamp_s=stamp)
        assert out.action.dtype == np.float32 and out.action.shape == (4,)
        assert np.isfinite(out.action).all()
        assert (out.action >= low).all() and (out.action <= high).all()
        if out.mode in (Mode.ESTOP, Mode.DISARMED):
            np.testing.assert_array_equal(out.action, STOP)
        elif previous is not None:
            step = np.abs(out.action.astype(np.float64) - previous).max()
            assert step <= limits.max_action_rate_per_s * (t - previous_t) + 1e-6, (out, previous)
        previous, previous_t = out.action.astype(np.float64), t


# ----------------------------------------------------------------------------------- faults
@pytest.mark.parametrize(
    ("state_kwargs", "action", "reference", "filter_name"),
    [
        ({}, [math.nan, 0.0, 0.0, 0.0], None, "finite"),
        ({}, [0.0, math.inf, 0.0, 0.0], None, "finite"),
        ({"position": (0.0, 0.0, math.nan)}, ACTION, None, "finite"),
        ({"position": (2.5, 0.0, 1.0)}, ACTION, None, "geofence"),
        ({"position": (0.0, 0.0, -0.1)}, ACTION, None, "geofence"),
        ({"tilt_deg": 61.0}, ACTION, None, "tilt"),
        ({"velocity": (2.0, 2.5, 0.0)}, ACTION, None, "speed"),
        ({"angular_velocity": (0.0, 0.0, 21.0)}, ACTION, None, "angular_velocity"),
        ({}, ACTION, (0.0, 1.1, 1.0), "tracking_error"),
    ],
)
def test_each_fault_latches_and_hands_over_to_the_fallback(
    state_kwargs: dict[str, Any], action: list[float], reference: tuple[float, ...] | None, filter_name: str
) -> None:
    chain, t = _armed_chain()
    t += DT
    assert chain.step(_state(t), ACTION, t, (0.0, 0.0, 1.0), action_stamp_s=t).mode is Mode.POLICY
    t += DT
    out = chain.step(_state(t, **state_kwargs), action, t, reference, action_stamp_s=t)
    assert out.mode is Mode.FALLBACK
    assert out.fault is not None and out.fault.filter == filter_name and out.fault.time_s == t
    assert chain.first_fault == out.fault
    assert chain.transitions[(Mode.POLICY, Mode.FALLBACK)] == 1
    # Latched: good inputs afterwards do not give the policy back.
    for _ in range(5):
        t += DT
        assert chain.step(_state(t), ACTION, t, action_stamp_s=t).mode is Mode.FALLBACK
    chain.reset()
    assert chain.mode is Mode.DISARMED and chain.fault is None and chain.first_fault is not None
    t += DT
    np.testing.assert_array_equal(chain.step(_state(t), ACTION, t, action_stamp_s=t).action, STOP)


def test_a_stale_state_faults_after_state_timeout() -> None:
    chain, t = _armed_chain()
    frozen = _state(t)
    steps = 0
    while chain.step(frozen, ACTION, t + steps * DT, action_stamp_s=t + steps * DT).mode is Mode.POLICY:
        steps += 1
    assert chain.fault is not None and chain.fault.filter == "stale_state"
    assert LIMITS.state_timeout_s - 1e-9 <= steps * DT <= LIMITS.state_timeout_s + DT + 1e-9


def test_a_dead_policy_faults_within_action_timeout_and_one_period() -> None:
    chain, t = _armed_chain()
    last_stamp = t
    steps = 0
    while True:
        steps += 1
        now = t + steps * DT
        if chain.step(_state(now), ACTION, now, action_stamp_s=last_stamp).mode is not Mode.POLICY:
            break
    assert chain.fault is not None and chain.fault.filter == "stale_action"
    assert "the policy stopped" in chain.fault.reason
    assert steps * DT <= LIMITS.action_timeout_s + DT + 1e-9


def test_a_stall_that_froze_the_sensor_too_is_not_a_dead_policy() -> None:
    """Counted on the states' clock: 45 ms without any state or action, then the action that answers
    the newest state, is a late loop, not a dead policy (the state is still within its timeout)."""
    chain, t = _armed_chain()
    assert LIMITS.action_timeout_s < 0.045 < LIMITS.state_timeout_s
    out = chain.step(_state(t), ACTION, t + 0.045, action_stamp_s=t)
    assert out.mode is Mode.POLICY, out.fault
    # The states went on without an action: now the policy is late.
    out = chain.step(_state(t + 0.045), ACTION, t + 0.046, action_stamp_s=t)
    assert out.fault is not None and out.fault.filter == "stale_action"


def test_estop_sends_stop_from_the_next_call_and_stays_until_reset() -> None:
    chain, t = _armed_chain()
    for _ in range(10):
        t += DT
        out = chain.step(_state(t), ACTION, t, action_stamp_s=t)
    assert not np.array_equal(out.action, STOP)
    chain.estop("operator pressed the button")
    for _ in range(50):
        t += DT
        out = chain.step(_state(t), ACTION, t, action_stamp_s=t)
        assert out.mode is Mode.ESTOP
        np.testing.assert_array_equal(out.action, STOP)
    armed, reason = chain.arm(bundle_ok=True, now_s=t)
    assert not armed and "e-stop latched (operator pressed the button)" in reason
    chain.reset()
    assert chain.mode is Mode.DISARMED
    armed, reason = chain.arm(bundle_ok=True, now_s=t)
    assert armed, reason
    assert chain.transitions[(Mode.POLICY, Mode.ESTOP)] == 1
    assert chain.transitions[(Mode.DISARMED, Mode.POLICY)] == 2


def test_after_arming_the_output_ramps_from_stop_at_the_slew_rate() -> None:
    chain, t = _armed_chain()
    previous = STOP.astype(np.float64)
    max_step = LIMITS.max_action_rate_per_s * DT
    for _ in range(5):
        t += DT
        out = chain.step(_state(t), ACTION, t, action_stamp_s=t)
        np.testing.assert_allclose(out.action, np.minimum(previous + max_step, ACTION), atol=1e-6)
        previous = out.action.astype(np.float64)


# ----------------------------------------------------------------------------------- arming
def test_arming_refuses_with_each_reason() -> None:
    chain = _chain()
    armed, reason = chain.arm(bundle_ok=False, now_s=0.0)
    assert not armed
    assert "bundle was not accepted" in reason and "no state received yet" in reason
    assert "no proof of life: 0 finite policy actions" in reason

    t = _stream(chain, 0.0, LIMITS.proof_of_life_s)
    assert chain.arm(bundle_ok=False, now_s=t) == (False, "the policy bundle was not accepted")
    armed, reason = chain.arm(bundle_ok=True, now_s=t + 0.2)
    assert not armed and "the state is 0.200 s old" in reason and "gap" in reason
    assert chain.mode is Mode.DISARMED

    t += DT
    chain.step(_state(t, position=(0.0, 2.1, 1.0)), ACTION, t, action_stamp_s=t)
    armed, reason = chain.arm(bundle_ok=True, now_s=t)
    assert not armed and reason == "position [0, 2.1, 1] m is outside the geofence [-2, -2, 0] to [2, 2, 2.5]"


def test_arming_needs_a_long_enough_stream_without_gaps() -> None:
    chain = _chain()
    t = _stream(chain, 0.0, 0.3)
    armed, reason = chain.arm(bundle_ok=True, now_s=t)
    assert (
        not armed
        and "31 finite policy actions in the last 1.0 s, arming needs 50 (a stream at >= 50.0" in reason
    )

    chain = _chain()
    t = _stream(chain, 0.0, 0.5)
    for k in range(1, 4):  # 30 ms without a new action: longer than 1/50 Hz
        chain.step(_state(t + k * DT), ACTION, t + k * DT, action_stamp_s=t)
    t = _stream(chain, t + 4 * DT, 0.6)
    armed, reason = chain.arm(bundle_ok=True, now_s=t)
    assert not armed and "a 0.040 s gap in the policy action stream" in reason

    armed, reason = chain.arm(bundle_ok=True, now_s=_stream(chain, t + DT, 1.0))
    assert armed and reason == "armed" and chain.armed


def test_non_finite_actions_are_no_proof_of_life() -> None:
    chain = _chain()
    t = 0.0
    for k in range(120):
        t = k * DT
        chain.step(_state(t), [math.nan] * 4, t, action_stamp_s=t)
    armed, reason = chain.arm(bundle_ok=True, now_s=t)
    assert not armed and "0 finite policy actions" in reason


# ----------------------------------------------------------------------------------- fallback
class _BrokenFallback:
    """Returns NaN: the chain must still ramp to stop_action, never pass it on."""

    def engage(self, state: RobotState, now_s: float) -> None:
        pass

    def act(self, state: RobotState, now_s: float, previous_action: np.ndarray) -> np.ndarray:
        return np.full(4, np.nan)


@pytest.mark.parametrize(
    ("cause", "state_age_s", "fragment"), [("broken", 0.0, "unusable"), ("stale", 1.0, "old")]
)
def test_the_fallback_ramps_to_stop_when_it_cannot_fly(cause: str, state_age_s: float, fragment: str) -> None:
    chain, t = _armed_chain()
    if cause == "broken":
        chain.fallback = _BrokenFallback()
    for _ in range(10):
        t += DT
        chain.step(_state(t), ACTION, t, action_stamp_s=t)
    t += DT
    previous = chain.step(_state(t), [math.nan] * 4, t, action_stamp_s=t).action
    assert (previous >= STOP + 0.5).all(), "the test must start from a spinning motor"
    for _ in range(10):
        t += DT
        out = chain.step(_state(t - state_age_s), ACTION, t, action_stamp_s=t)
        assert out.mode is Mode.FALLBACK and out.statuses[0].filter == "fallback"
        assert fragment in out.statuses[0].reason
        assert np.abs(out.action - previous).max() <= LIMITS.max_action_rate_per_s * DT + 1e-6
        previous = out.action
    np.testing.assert_array_equal(out.action, STOP)


def _robot_state(env: QuadrotorEnv, t: float) -> RobotState:
    s = env.state[0].double()
    return RobotState(
        t,
        s[POS_W].numpy(),
        s[LINVEL_W].numpy(),
        quat_to_rotmat(s[QUAT_WXYZ]).numpy(),
        s[ANGVEL_B].numpy(),
    )


def _floor(env: QuadrotorEnv, ground_z_m: float) -> None:
    """The simulator has no floor: touching it stops the quadrotor dead (no bounce, no sliding)."""
    if env.state[0, POS_W.start + 2] <= ground_z_m:
        env.state[:, POS_W.start + 2] = ground_z_m
        env.state[:, LINVEL_W] = 0.0
        env.state[:, ANGVEL_B] = 0.0


def test_landing_fallback_lands_a_tilted_moving_crazyflie_inside_the_geofence() -> None:
    """Pushed 10 cm through the wall at 1 m height, tilted 20 deg and moving 1 m/s outwards: the geofence
    faults and the fallback lands at the wall's safe margin."""
    env = QuadrotorEnv(
        QuadrotorEnvConfig(
            num_envs=1,
            platform="crazyflie",
            episode_length_s=60.0,
            max_position_error_m=1e3,
            max_linear_velocity_mps=1e3,
            max_angular_velocity_radps=1e3,
        )
    )
    env.reset(seed=0)
    hover = np.full(4, float(env.params.hover_action()[0]))
    env.state[:, POS_W] = torch.tensor([1.6, 0.0, 1.0])
    env.state[:, QUAT_WXYZ] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    env.state[:, LINVEL_W] = 0.0
    env.state[:, ANGVEL_B] = 0.0
    env.state[:, MOTORS] = env.params.hover_command()
    chain = _chain()

    t = 0.0
    for k in range(round(LIMITS.proof_of_life_s / DT) + 1):  # proof of life, the simulator paused
        t = k * DT
        chain.step(_robot_state(env, t), hover, t, action_stamp_s=t)
    assert chain.arm(bundle_ok=True, now_s=t) == (True, "armed")
    for _ in range(20):  # the policy flies: motors spin up from stop at the slew rate
        t += DT
        out = chain.step(_robot_state(env, t), hover, t, action_stamp_s=t)
        env.step(torch.as_tensor(out.action[None]))
    assert out.mode is Mode.POLICY

    env.state[:, POS_W] = torch.tensor([2.1, 0.0, 1.0])
    env.state[:, QUAT_WXYZ] = quat_from_axis_angle(
        torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([math.radians(20.0)])
    )
    env.state[:, LINVEL_W] = torch.tensor([1.0, 0.0, 0.0])
    assert math.isclose(math.degrees(_robot_state(env, t).tilt_rad()), 20.0, abs_tol=0.1)

    fallback = chain.fallback
    assert isinstance(fallback, LandingFallback)
    ground_z = LIMITS.geofence_min_m[2]
    outputs, landed_state = [out.action], None
    for _ in range(1000):
        t += DT
        out = chain.step(_robot_state(env, t), hover, t, action_stamp_s=t)
        assert out.mode is Mode.FALLBACK
        outputs.append(out.action)
        if fallback.landed and landed_state is None:
            landed_state = _robot_state(env, t)
        if np.array_equal(out.action, STOP):
            break
        _, _, terminated, truncated, _ = env.step(torch.as_tensor(out.action[None]))
        assert not (terminated | truncated).any()
        _floor(env, ground_z)
    assert chain.first_fault is not None and chain.first_fault.filter == "geofence"
    assert landed_state is not None, "the fallback never landed"
    assert np.array_equal(outputs[-1], STOP), "motors not stopped after landing"
    actions = np.stack(outputs)
    assert (np.abs(actions) <= 1.0).all()
    assert np.abs(np.diff(actions, axis=0)).max() <= LIMITS.max_action_rate_per_s * DT + 1e-6
    position = landed_state.position_w
    assert (np.asarray(LIMITS.geofence_min_m) <= position).all()
    assert (position <= np.asarray(LIMITS.geofence_max_m)).all()
    assert abs(position[0] - (LIMITS.geofence_max_m[0] - 0.25)) < 0.05, "not at the landing point"
    assert abs(position[2] - ground_z) <= 0.05
    assert np.linalg.norm(landed_state.velocity_w) < 0.2
    assert len(outputs) * DT < 8.0
