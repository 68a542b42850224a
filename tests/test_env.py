"""The batched quadrotor task: reset ranges, seeding, containment of non-finite values, episode ends, targets.

Non-finite handling is checked against a twin env on the same seed: the other envs must evolve bit for
bit as if nothing had happened.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch

from robotrl.envs.quadrotor.dynamics import LINVEL_W, MOTORS, POS_W, QUAT_WXYZ
from robotrl.envs.quadrotor.env import (
    PRIVILEGED_DIM,
    TEACHER_FEEDFORWARD,
    TEACHER_OBSERVATION_DIM,
    ChangeConfig,
    InitConfig,
    QuadrotorEnv,
    QuadrotorEnvConfig,
    privileged_slice,
    teacher_observation,
)
from robotrl.envs.quadrotor.observations import OBSERVATION_DIM
from robotrl.envs.quadrotor.targets import TargetConfig, TargetGenerator

POSITION_ERROR = slice(0, 3)
R22 = 3 + 8  # rotation_matrix_wb is row-major at columns 3..11; R[2, 2] = cos(tilt)
LINEAR_VELOCITY_ERROR = slice(12, 15)
ANGULAR_VELOCITY = slice(15, 18)
PREVIOUS_ACTION = slice(18, 22)
AT_TARGET = InitConfig(position_m=0.0, tilt_deg=0.0, velocity_mps=0.0, angular_velocity_radps=0.0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def make_env(num_envs: int = 8, **overrides: object) -> QuadrotorEnv:
    return QuadrotorEnv(QuadrotorEnvConfig(num_envs=num_envs, **overrides))  # type: ignore[arg-type]


def hover_actions(env: QuadrotorEnv) -> torch.Tensor:
    return env.params.hover_action().unsqueeze(-1).expand(env.num_envs, 4).clone()


def jittered_actions(env: QuadrotorEnv, steps: int, seed: int = 7) -> list[torch.Tensor]:
    """Finite actions near hover, different every step (so previous_action is not trivial)."""
    g = torch.Generator().manual_seed(seed)
    hover = hover_actions(env)
    return [hover + 0.05 * torch.randn(hover.shape, generator=g) for _ in range(steps)]


# ------------------------------------------------------------------------------------------ reset
def test_reset_shapes_and_dtypes() -> None:
    env = make_env(num_envs=5)
    obs = env.reset()
    assert obs.shape == (5, OBSERVATION_DIM) == (5, 22)
    assert obs.dtype == torch.float32
    privileged = env.privileged_observation()
    assert PRIVILEGED_DIM == env.privileged_dim == 22 + 28
    assert privileged.shape == (5, env.privileged_dim)
    assert privileged.dtype == torch.float32
    obs, reward, terminated, truncated, info = env.step(hover_actions(env))
    assert obs.shape == (5, 22)
    assert reward.shape == terminated.shape == truncated.shape == (5,)
    assert terminated.dtype == truncated.dtype == torch.bool
    assert info["privileged_obs"].shape == (5, env.privileged_dim)  # type: ignore[union-attr]


def test_initial_states_respect_init_ranges() -> None:
    init = InitConfig(position_m=0.3, tilt_deg=20.0, velocity_mps=0.2, angular_velocity_radps=0.5)
    env = make_env(num_envs=1024, init=init)
    obs = env.reset()
    eps = 1e-5
    position = obs[:, POSITION_ERROR].abs()
    assert position.max() <= init.position_m + eps
    tilt_deg = torch.rad2deg(torch.acos(obs[:, R22].clamp(-1.0, 1.0)))
    assert tilt_deg.max() <= init.tilt_deg + 1e-3
    assert obs[:, LINEAR_VELOCITY_ERROR].abs().max() <= init.velocity_mps + eps
    assert obs[:, ANGULAR_VELOCITY].abs().max() <= init.angular_velocity_radps + eps
    # The ranges are used, not just respected: 1024 draws come close to every bound.
    assert position.max() > 0.95 * init.position_m
    assert tilt_deg.max() > 0.9 * init.tilt_deg
    assert obs[:, LINEAR_VELOCITY_ERROR].abs().max() > 0.95 * init.velocity_mps
    torch.testing.assert_close(env.state[:, QUAT_WXYZ].norm(dim=-1), torch.ones(1024))
    torch.testing.assert_close(obs[:, PREVIOUS_ACTION], hover_actions(env))


def test_same_seed_same_starts_different_seed_different_starts() -> None:
    a, b, c = make_env(seed=3), make_env(seed=3), make_env(seed=4)
    obs_a, obs_b, obs_c = a.reset(), b.reset(), c.reset()
    assert torch.equal(obs_a, obs_b)
    assert not torch.allclose(obs_a, obs_c)
    actions = jittered_actions(a, 1)[0]
    assert torch.equal(a.step(actions)[0], b.step(actions)[0])
    # reset(seed) re-seeds: the first starts come back.
    assert torch.equal(c.reset(seed=3), obs_a)


# ------------------------------------------------------------------------------------------ non-finite
@pytest.mark.parametrize("bad_value", [math.nan, math.inf, -math.inf])
def test_nonfinite_action_ends_only_that_env(bad_value: float) -> None:
    env, twin = make_env(), make_env()
    env.reset()
    twin.reset()
    actions = jittered_actions(env, 6)
    for a in actions[:3]:
        env.step(a)
        twin.step(a)
    bad = actions[3].clone()
    bad[2, 1] = bad_value
    obs, reward, terminated, truncated, info = env.step(bad)
    _, twin_reward, twin_terminated, twin_truncated, _ = twin.step(actions[3])

    others = torch.tensor([i for i in range(env.num_envs) if i != 2])
    assert not (twin_terminated | twin_truncated).any(), "premise: no other episode ends in these steps"
    assert terminated.tolist() == [i == 2 for i in range(env.num_envs)]
    assert not truncated.any()
    assert info["nonfinite"].tolist() == terminated.tolist()  # type: ignore[union-attr]
    assert reward[2] == env.config.reward.termination
    assert torch.isfinite(reward).all() and torch.isfinite(obs).all()
    assert torch.isfinite(info["final_obs"]).all()  # type: ignore[arg-type]
    # Only env 2 started over; the others were stepped exactly as without the bad action.
    assert env.episode_step.tolist() == [0 if i == 2 else 4 for i in range(env.num_envs)]
    assert torch.isfinite(env.state).all()
    assert torch.equal(env.state[others], twin.state[others])
    assert torch.equal(reward[others], twin_reward[others])
    # ...and keep doing so (hover targets and no observation noise: no random draws between resets).
    for a in actions[4:]:
        obs, *_ = env.step(a)
        twin_obs, _, twin_terminated, twin_truncated, _ = twin.step(a)
        assert not (twin_terminated | twin_truncated).any()
        assert torch.equal(obs[others], twin_obs[others])


def test_nonfinite_state_is_contained_to_its_env() -> None:
    env, twin = make_env(), make_env()
    env.reset()
    twin.reset()
    actions = jittered_actions(env, 1)[0]
    env.state[5, LINVEL_W.start] = math.nan
    obs, reward, terminated, truncated, info = env.step(actions)
    _, twin_reward, twin_terminated, twin_truncated, _ = twin.step(actions)

    others = torch.tensor([i for i in range(env.num_envs) if i != 5])
    assert not (twin_terminated | twin_truncated).any()
    assert terminated.tolist() == [i == 5 for i in range(env.num_envs)]
    assert not truncated.any()
    assert info["nonfinite"].tolist() == terminated.tolist()  # type: ignore[union-attr]
    assert reward[5] == env.config.reward.termination
    assert torch.isfinite(reward).all() and torch.isfinite(obs).all() and torch.isfinite(env.state).all()
    assert torch.isfinite(info["final_obs"]).all()  # type: ignore[arg-type]
    assert env.episode_step[5] == 0
    assert torch.equal(env.state[others], twin.state[others])
    assert torch.equal(reward[others], twin_reward[others])


def test_two_envs_ending_together_on_a_moving_target() -> None:
    """A partial reset of several envs must work for time-dependent targets (regression: it raised)."""
    target = TargetConfig(mode="figure8")
    env, twin = make_env(target=target), make_env(target=target)
    env.reset()
    twin.reset()
    for a in jittered_actions(env, 3):
        env.step(a)
        twin.step(a)
    actions = hover_actions(env)
    bad = actions.clone()
    bad[[1, 6], 0] = math.nan
    _, _, terminated, _, _ = env.step(bad)
    twin.step(actions)

    assert terminated.nonzero().squeeze(-1).tolist() == [1, 6]
    kept = torch.tensor([0, 2, 3, 4, 5, 7])
    torch.testing.assert_close(env.target_position_w[kept], twin.target_position_w[kept], rtol=0, atol=0)
    a, phase = target.figure8_size_m, env.targets.phase[[1, 6]]
    expected = torch.stack((a * phase.sin(), 0.5 * a * (2 * phase).sin(), torch.zeros(2)), -1)
    torch.testing.assert_close(env.target_position_w[[1, 6]], expected)


def test_wrong_action_shape_is_a_value_error_naming_both_shapes() -> None:
    env = make_env(num_envs=8)
    env.reset()
    with pytest.raises(ValueError, match=re.escape("(8, 4)") + ".*" + re.escape("(8, 3)")):
        env.step(torch.zeros(8, 3))
    with pytest.raises(ValueError, match=re.escape("(4,)")):
        env.step(torch.zeros(4))


# ------------------------------------------------------------------------------------------ episode ends
def test_truncation_exactly_at_the_episode_length() -> None:
    init = InitConfig(position_m=0.1, tilt_deg=5.0, velocity_mps=0.1, angular_velocity_radps=0.1)
    env = make_env(episode_length_s=0.05, init=init)
    twin = make_env(episode_length_s=1.0, init=init)  # same starts, never truncated in these steps
    assert env.config.max_episode_steps == 5
    env.reset()
    twin.reset()
    for step, a in enumerate(jittered_actions(env, 5), start=1):
        obs, reward, terminated, truncated, info = env.step(a)
        twin_obs, twin_reward, _, _, twin_info = twin.step(a)
        assert not terminated.any()
        assert torch.equal(info["time_outs"], truncated)  # type: ignore[arg-type]
        if step < 5:
            assert not truncated.any()
            assert "final_obs" not in info
            assert torch.equal(obs, twin_obs)
    assert truncated.all()
    # The last observation of the finished episode is kept; the returned one starts the next episode.
    assert torch.equal(info["final_obs"], twin_obs)  # type: ignore[arg-type]
    assert torch.equal(info["final_privileged_obs"], twin_info["privileged_obs"])  # type: ignore[arg-type]
    assert torch.equal(reward, twin_reward)  # a time-out is not punished
    assert not torch.allclose(obs, twin_obs)
    assert (env.episode_step == 0).all()
    assert info["episode"]["episode_length_s"] == pytest.approx(0.05)  # type: ignore[index]


def test_termination_when_the_position_error_exceeds_the_limit() -> None:
    env = make_env(num_envs=4, init=AT_TARGET, max_position_error_m=0.3)
    env.reset()
    env.state[:, POS_W.start] = torch.tensor([0.25, 0.35, -0.29, -0.31])
    _, reward, terminated, truncated, _ = env.step(hover_actions(env))
    assert terminated.tolist() == [False, True, False, True]
    assert not truncated.any()
    assert reward[1] == reward[3] == env.config.reward.termination
    assert (reward[[0, 2]] > 0).all()
    assert env.episode_step.tolist() == [1, 0, 1, 0]


# ------------------------------------------------------------------------------------------ targets
def test_figure8_velocity_is_the_derivative_of_its_position() -> None:
    config = TargetConfig(mode="figure8", figure8_size_m=0.8, figure8_period_s=3.0)
    targets = TargetGenerator(config, 16, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    targets.reset_idx(torch.arange(16), g)
    t = torch.linspace(0.0, 6.0, 16, dtype=torch.float64)
    h = 1e-4
    _, velocity = targets(t, g)
    ahead, _ = targets(t + h, g)
    behind, _ = targets(t - h, g)
    torch.testing.assert_close(velocity, (ahead - behind) / (2 * h), rtol=1e-5, atol=1e-6)
    assert velocity.norm(dim=-1).max() > 0.5  # it does move


def test_figure8_target_in_the_env_moves_consistently() -> None:
    env = make_env(num_envs=4, init=AT_TARGET, target=TargetConfig(mode="figure8"), max_position_error_m=10.0)
    env.reset()
    positions, velocities = [env.target_position_w.clone()], [env.target_velocity_w.clone()]
    for _ in range(50):
        env.step(hover_actions(env))
        positions.append(env.target_position_w.clone())
        velocities.append(env.target_velocity_w.clone())
    p, v = torch.stack(positions), torch.stack(velocities)
    dt = env.config.dt
    torch.testing.assert_close(v[1:-1], (p[2:] - p[:-2]) / (2 * dt), rtol=0, atol=2e-3)
    # The policy sees the target's motion: the velocity error of a drone at rest is minus the target velocity.
    obs = env.observe()
    torch.testing.assert_close(obs[:, LINEAR_VELOCITY_ERROR], env.state[:, LINVEL_W] - v[-1])


@pytest.mark.parametrize("period_s", [0.05, 0.1, 0.3])
def test_waypoints_jump_every_period(period_s: float) -> None:
    target = TargetConfig(mode="waypoints", waypoint_period_s=period_s, waypoint_range_m=0.5)
    env = make_env(num_envs=3, init=AT_TARGET, target=target, max_position_error_m=10.0, episode_length_s=1.0)
    env.reset()
    assert torch.equal(env.target_position_w, torch.zeros(3, 3))
    previous = env.target_position_w.clone()
    jumps = []
    for step in range(1, 91):
        env.step(hover_actions(env))
        current = env.target_position_w.clone()
        if not torch.equal(current, previous):
            jumps.append(step)
            assert (current != previous).all(-1).all(), "every env jumps at the same time"
            assert current.abs().max() <= target.waypoint_range_m
        previous = current
    every = round(period_s / env.config.dt)
    assert jumps == list(range(every, 91, every))


def test_privileged_obs_starts_with_the_policy_obs() -> None:
    env = make_env(target=TargetConfig(mode="figure8"), episode_length_s=0.03)
    obs = env.reset()
    assert torch.equal(env.privileged_observation()[:, :OBSERVATION_DIM], obs)
    for _ in range(3):
        obs, _, _, truncated, info = env.step(hover_actions(env))
        privileged = info["privileged_obs"]
        assert torch.equal(privileged[:, :OBSERVATION_DIM], obs)  # type: ignore[index]
        target_velocity = privileged[:, privileged_slice("target_velocity_w")]  # type: ignore[index]
        assert torch.equal(target_velocity, env.target_velocity_w)
    assert truncated.all()
    final = info["final_privileged_obs"]
    assert torch.equal(final[:, :OBSERVATION_DIM], info["final_obs"])  # type: ignore[index]


# ------------------------------------------------------------------------------------------ physics
def test_hover_action_holds_a_level_crazyflie_at_the_target() -> None:
    env = make_env(num_envs=4, init=AT_TARGET)
    env.reset()
    hover = hover_actions(env)
    steps = round(2.0 / env.config.dt)
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(hover)
        assert not (terminated | truncated).any()
        assert obs[:, POSITION_ERROR].norm(dim=-1).max() < 0.01
        torch.testing.assert_close(
            reward, torch.full_like(reward, env.config.reward.constant), rtol=0, atol=1e-3
        )
    assert env.episode_step.tolist() == [steps] * 4


def test_each_rotors_hover_action_holds_a_heavier_quadrotor_with_a_weak_rotor_level() -> None:
    """The nominal hover action plus the teacher observation's rotor_hover_change is the exact feedforward:
    with a payload and one rotor at 70 %, commanding it (motors already there) keeps every quadrotor still;
    the nominal hover tips it. On the nominal quadrotor every input beyond the 22 values is 0."""
    drift = {}
    for name in ("rotor_hover_action", "hover_action"):
        env = make_env(num_envs=6, platform="raptor", init=AT_TARGET, observation="teacher")
        obs = env.reset()
        assert torch.equal(obs[:, OBSERVATION_DIM:], torch.zeros_like(obs[:, OBSERVATION_DIM:]))
        p = env.params
        weak = p.rotor_thrust_scale.clone()
        weak[:, 0] = 0.7
        env.dynamics.set_params(dataclasses.replace(p, rotor_thrust_scale=weak, mass=p.mass * 1.2))
        change = env.observe()[:, TEACHER_FEEDFORWARD[0] : TEACHER_FEEDFORWARD[1]]
        feedforward = env.nominal_params.rotor_hover_action() + change
        torch.testing.assert_close(feedforward, env.params.rotor_hover_action())
        assert (feedforward[:, 0] > feedforward[:, 1]).all()  # the weak rotor works harder
        action = feedforward if name == "rotor_hover_action" else hover_actions(env)
        env.state[:, MOTORS] = env.dynamics.action_to_motor_command(action)
        for _ in range(round(1.0 / env.config.dt)):
            obs, *_ = env.step(action)
        drift[name] = obs[:, POSITION_ERROR].norm(dim=-1)
    assert drift["rotor_hover_action"].max() < 1e-3
    assert drift["hover_action"].max() > 0.1


def test_observation_noise_reaches_the_policy_but_not_the_critic() -> None:
    noisy = make_env(observation_noise=0.1)
    clean = make_env()
    obs_noisy, obs_clean = noisy.reset(), clean.reset()
    # Same starts: the noise is drawn after the initial state, from the same seeded generator.
    assert torch.equal(noisy.state, clean.state)
    assert (obs_noisy - obs_clean).abs().max() > 0.05
    assert torch.equal(noisy.privileged_observation()[:, :OBSERVATION_DIM], obs_clean)


# ------------------------------------------------------------------------------------------ changes
def test_mid_episode_changes_act_on_the_dynamics_show_to_the_teacher_and_end_with_the_episode() -> None:
    """Every episode changes at 0.1 s: a payload, a weak rotor or a gust, each within its ranges; the
    privileged observation shows it from that step; a gust ends; a reset restores the quadrotor."""
    changes = ChangeConfig(probability=1.0, window_s=(0.1, 0.1), gust_s=(0.05, 0.05))
    env = make_env(
        num_envs=96,
        platform="raptor",
        changes=changes,
        observation="teacher",
        episode_length_s=0.3,
        init=InitConfig(0.0, 0.0, 0.0, 0.0),
    )
    assert env.observation_dim == TEACHER_OBSERVATION_DIM == 22 + 12
    obs = env.reset()
    nominal = env.nominal_params
    force_at_start = env.disturbance_force_w.clone()
    weight = (nominal.mass * 9.81).unsqueeze(-1)
    for _ in range(10):
        obs, *_ = env.step(hover_actions(env))
        assert env.params is nominal and torch.equal(env.disturbance_force_w, force_at_start)
    obs, *_, info = env.step(hover_actions(env))  # the change acts on this step
    privileged = info["privileged_obs"]
    assert torch.equal(obs, teacher_observation(privileged))  # type: ignore[arg-type]
    mass_ratio = env.params.mass / nominal.mass
    rotors = env.params.rotor_thrust_scale
    gust = (env.disturbance_force_w - force_at_start).norm(dim=-1) / weight.squeeze(-1)
    heavier, weaker, pushed = mass_ratio > 1.0, (rotors < 1.0).any(-1), gust > 1e-3
    assert torch.equal(heavier.int() + weaker.int() + pushed.int(), torch.ones(96, dtype=torch.int))
    assert heavier.sum() > 15 and weaker.sum() > 15 and pushed.sum() > 15
    assert ((mass_ratio[heavier] >= 1.1) & (mass_ratio[heavier] <= 1.4)).all()
    assert ((rotors < 1.0).sum(-1)[weaker] == 1).all() and rotors[weaker].min() >= 0.6
    assert ((gust[pushed] >= 0.2 - 1e-5) & (gust[pushed] <= 0.8 + 1e-5)).all()
    shown = privileged[:, privileged_slice("log_mass_ratio")].squeeze(-1)  # type: ignore[index]
    assert torch.allclose(shown, mass_ratio.log())
    assert torch.equal(privileged[:, privileged_slice("rotor_thrust_loss")], 1.0 - rotors)  # type: ignore[index]
    hover_change = privileged[:, privileged_slice("rotor_hover_change")]  # type: ignore[index]
    assert torch.equal(hover_change.abs().sum(-1) > 0, heavier | weaker)  # a gust does not move it
    for _ in range(5):  # the 0.05 s gust is over
        env.step(hover_actions(env))
    assert torch.allclose(env.disturbance_force_w, force_at_start, atol=1e-6)
    for _ in range(15):  # the episode ends (0.3 s): the next one starts with the quadrotor as built
        env.step(hover_actions(env))
    assert torch.equal(env.params.mass, nominal.mass)
    assert torch.equal(env.params.rotor_thrust_scale, nominal.rotor_thrust_scale)


def test_a_weak_rotor_in_training_is_what_the_suite_flies() -> None:
    """The same rotor at the same efficiency moves the quadrotor the same, whether the training change or
    the suite's mid-flight hook makes it."""
    from robotrl.envs.quadrotor.mid_flight import WeakenRotor

    changes = ChangeConfig(probability=1.0, window_s=(0.05, 0.05), rotor_efficiency=(0.7, 0.7))
    trained = make_env(num_envs=64, changes=changes, init=InitConfig(0.0, 0.0, 0.0, 0.0))
    trained.reset()
    rotor = trained._change_rotor[trained._change_kind == 1][0].item()
    env_id = int(((trained._change_kind == 1) & (trained._change_rotor == rotor)).nonzero()[0])
    hooked = make_env(num_envs=1, init=InitConfig(0.0, 0.0, 0.0, 0.0))
    hooked.reset()
    hook = WeakenRotor(at_s=0.05, rotor=("front_right", "back_right", "back_left", "front_left")[rotor])
    for step in range(30):
        hook(step, hooked)
        trained.step(hover_actions(trained))
        hooked.step(hover_actions(hooked))
    assert torch.allclose(trained.state[env_id], hooked.state[0], atol=1e-5)
    assert hooked.state[0, 10:13].abs().max() > 0.1  # it does spin up


def test_kind_weights_choose_the_kind_of_change() -> None:
    changes = ChangeConfig(probability=1.0, window_s=(0.02, 0.02), kind_weights=(0.0, 1.0, 0.0))
    env = make_env(num_envs=64, platform="raptor", changes=changes, init=InitConfig(0.0, 0.0, 0.0, 0.0))
    env.reset()
    force = env.disturbance_force_w.clone()
    for _ in range(3):
        env.step(hover_actions(env))
    assert ((env.params.rotor_thrust_scale < 1.0).sum(-1) == 1).all()  # every env: one weak rotor ...
    assert torch.equal(env.params.mass, env.nominal_params.mass)  # ... no payload, no gust
    assert torch.equal(env.disturbance_force_w, force)


def test_change_config_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError, match="rotor_efficiency"):
        ChangeConfig(rotor_efficiency=(0.5, 1.2))
    with pytest.raises(ValueError, match="probability"):
        ChangeConfig(probability=1.5)
    with pytest.raises(ValueError, match="kind_weights"):
        ChangeConfig(kind_weights=(0.0, 0.0, 0.0))


def test_fly_gives_each_controller_the_observation_it_reads() -> None:
    """A teacher reads teacher_observation, a student RAPTOR's 22 values, from the same env config."""
    from robotrl.envs.quadrotor.evaluation import fly

    class Recorder:
        def __init__(self, observation: str | None):
            if observation is not None:
                self.observation = observation
            self.widths: set[int] = set()

        def reset(self, batch_size: int) -> None:
            del batch_size

        def act(self, obs: np.ndarray) -> np.ndarray:
            self.widths.add(obs.shape[1])
            return np.zeros((obs.shape[0], 4), np.float32)

    teacher, student = Recorder("teacher"), Recorder(None)
    for controller in (teacher, student):
        fly(controller, QuadrotorEnvConfig(num_envs=3), duration_s=0.05)
    assert teacher.widths == {TEACHER_OBSERVATION_DIM} and student.widths == {OBSERVATION_DIM}
