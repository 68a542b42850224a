"""The jump curriculum and the batched jump env: level moves, command ranges, phases, rewards, resets."""

from __future__ import annotations

import dataclasses
import math

import mujoco
import numpy as np
import pytest
import torch

from robotrl.envs.quadruped.curriculum import (
    COMMAND_DIM,
    LANDING_POS,
    LANDING_QUAT,
    OBSTACLE_CENTRE,
    OBSTACLE_SIZE,
    CurriculumConfig,
    JumpCurriculum,
)
from robotrl.envs.quadruped.jump_env import (
    ACTION_DIM,
    OBSERVATION_DIM,
    OBSERVATION_FIELDS,
    PRIVILEGED_DIM,
    QuadrupedJumpEnv,
    QuadrupedJumpEnvConfig,
    RandomisationConfig,
    TerminationConfig,
    _foot_positions_b,
    _leg_offsets,
)
from robotrl.envs.quadruped.model import A1Config, build_a1

DROP_HEIGHT_M = 0.4


def _curriculum(num_envs: int = 3, **overrides: object) -> JumpCurriculum:
    config = CurriculumConfig(**{"stage": "forward", "upward_fraction": 0.0, **overrides})
    return JumpCurriculum(config, num_envs)


def _env(num_envs: int = 2, **overrides: object) -> QuadrupedJumpEnv:
    return QuadrupedJumpEnv(QuadrupedJumpEnvConfig(num_envs=num_envs, num_threads=1, **overrides))


def _episode(curriculum: JumpCurriculum, env_ids: list[int], success: list[bool]) -> None:
    """One finished episode for each of env_ids, drawn at its level first."""
    ids = torch.tensor(env_ids)
    curriculum.sample(ids, torch.Generator().manual_seed(0))
    curriculum.update(ids, torch.tensor(success))


def test_curriculum_levels_up_after_one_success_and_down_after_two_failures() -> None:
    cur = _curriculum(initial_level=5)
    _episode(cur, [0, 1, 2], [True, False, False])
    assert cur.level.tolist() == [6, 5, 5]
    _episode(cur, [1, 2], [False, True])  # env 2's success breaks its run of failures
    assert cur.level.tolist() == [6, 4, 6]
    _episode(cur, [2], [False])
    assert cur.level.tolist() == [6, 4, 6], "one failure must not move a level"


def test_curriculum_clamps_at_both_ends_and_ignores_mixed_in_upward_jumps() -> None:
    top, bottom = _curriculum(num_envs=1, initial_level=10), _curriculum(num_envs=1, initial_level=0)
    for _ in range(3):
        _episode(top, [0], [True])
        _episode(bottom, [0], [False])
    assert top.level.item() == 10 and bottom.level.item() == 0
    mixed_in = _curriculum(num_envs=1, initial_level=4, upward_fraction=1.0)
    _episode(mixed_in, [0], [True])
    assert mixed_in.level.item() == 4
    with pytest.raises(ValueError, match="same num_envs"):
        _curriculum(num_envs=2).load_state_dict(top.state_dict())
    restored = _curriculum(num_envs=1)
    restored.load_state_dict(top.state_dict())
    assert restored.level.item() == 10 and restored.summary()["curriculum/share_level_10"] == 1.0


@pytest.mark.parametrize("level", [0, 1, 5, 10])
def test_forward_commands_lie_in_their_level_band(level: int) -> None:
    n = 2000
    cur = _curriculum(num_envs=n, initial_level=level, upward_fraction=0.1)
    command = cur.sample(torch.arange(n), torch.Generator().manual_seed(level))
    assert command.shape == (n, COMMAND_DIM)
    dx, dy = command[:, 0], command[:, 1]
    upward = ~cur.from_level
    assert 0.05 < upward.float().mean().item() < 0.15, "about 10% in-place jumps mixed in"
    assert (command[upward, LANDING_POS] == 0).all()
    band = 0.1  # 1.0 m over 10 bands
    jumps = dx[~upward]
    assert jumps.min() >= max(0.0, (level - 1) * band) - 1e-6 and jumps.max() <= level * band + 1e-6
    assert dy.abs().max() <= 0.3 * level / 10 + 1e-6
    if level == 10:
        assert jumps.min() < 0.91 and jumps.max() > 0.99 and dy.abs().max() > 0.28, "the band is not filled"
    assert torch.equal(command[:, LANDING_QUAT], torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, 4))
    assert (command[:, OBSTACLE_CENTRE.start : OBSTACLE_SIZE.stop] == 0).all()


def test_obstacle_commands_put_a_box_of_the_level_height_between_start_and_landing() -> None:
    n = 500
    cur = _curriculum(num_envs=n, stage="obstacle", initial_level=10)
    command = cur.sample(torch.arange(n), torch.Generator().manual_seed(0))
    box = command[:, OBSTACLE_SIZE]
    assert ((box[:, 2] >= 0.27 - 1e-6) & (box[:, 2] <= 0.3 + 1e-6)).all()
    assert ((box[:, 1] >= 0.6) & (box[:, 1] <= 1.2)).all()
    # Clear of the A1's front toes at the start (x <= 0.18 m) and of its hind toes at the landing
    # (landing - 0.23 m), by about the same margin on either side.
    near_edge = command[:, OBSTACLE_CENTRE][:, 0] - 0.5 * box[:, 0]
    far_edge = command[:, OBSTACLE_CENTRE][:, 0] + 0.5 * box[:, 0]
    before, after = near_edge - 0.18, command[:, 0] - 0.23 - far_edge
    assert before.min() > 0.04 and after.min() > 0.04 and (before - after).abs().max() < 1e-5
    assert command[:, 0].min() >= 0.6 and command[:, 0].max() > 0.79 and command[:, 0].max() <= 0.8
    long = _curriculum(num_envs=n, stage="obstacle", initial_level=10, obstacle_max_forward_m=1.0)
    landing = long.sample(torch.arange(n), torch.Generator().manual_seed(0))[:, 0]
    assert landing.max() <= 1.0 and landing.max() > 0.99
    with pytest.raises(ValueError, match="obstacle_max_forward_m"):
        CurriculumConfig(obstacle_min_forward_m=0.8, obstacle_max_forward_m=0.7)
    fixed = _curriculum(num_envs=n, stage="obstacle", upward_fraction=0.0, fixed_obstacle_height_m=0.25)
    command = fixed.sample(torch.arange(n), torch.Generator().manual_seed(0))
    assert torch.allclose(command[:, OBSTACLE_SIZE][:, 2], torch.tensor(0.25)), "level 0, yet 0.25 m boxes"
    assert torch.allclose(command[:, OBSTACLE_CENTRE][:, 2], torch.tensor(0.125))


def test_obstacle_stage_rehearses_box_free_forward_jumps_that_leave_the_levels_alone() -> None:
    n = 4000
    cur = _curriculum(num_envs=n, stage="obstacle", initial_level=3, rehearsal_fraction=0.3)
    command = cur.sample(torch.arange(n), torch.Generator().manual_seed(0))
    boxed = command[:, OBSTACLE_SIZE][:, 2] > 0
    rehearsed = ~boxed
    assert torch.equal(boxed, cur.from_level), "only the box jumps count for the levels"
    assert 0.25 < rehearsed.float().mean().item() < 0.35
    assert (command[rehearsed, OBSTACLE_CENTRE.start : OBSTACLE_SIZE.stop] == 0).all()
    forward, lateral = command[rehearsed, 0], command[rehearsed, 1]
    assert forward.min() == 0.0 and forward.max() > 0.95 and forward.max() <= 1.0, "every forward level"
    assert (forward < 0.6).float().mean() > 0.4, "short jumps the boxes never ask for"
    assert lateral.abs().max() > 0.2 and (lateral.abs() <= 0.3 * (forward + 0.1) + 1e-6).all(), "level bands"
    before = cur.level.clone()
    cur.update(torch.arange(n)[rehearsed], torch.ones(int(rehearsed.sum()), dtype=torch.bool))
    assert torch.equal(cur.level, before)
    forward_stage = _curriculum(num_envs=n, initial_level=3, rehearsal_fraction=0.3)
    landing = forward_stage.sample(torch.arange(n), torch.Generator().manual_seed(0))[:, 0]
    assert forward_stage.from_level.all() and landing.min() >= 0.2 - 1e-6, (
        "rehearsal is the obstacle stage's alone"
    )
    off = _curriculum(num_envs=n, stage="obstacle", initial_level=3)
    boxes = off.sample(torch.arange(n), torch.Generator().manual_seed(0))[:, OBSTACLE_SIZE][:, 2]
    assert off.from_level.all() and (boxes > 0).all(), "off by default: every jump over a box"
    with pytest.raises(ValueError, match="rehearsal_fraction"):
        CurriculumConfig(rehearsal_fraction=1.5)


@pytest.mark.parametrize("simulator", ["mujoco", "pybullet"])
def test_obstacle_stage_places_each_envs_box_and_a_robot_lands_on_its_top(simulator: str) -> None:
    # A box deep enough for all four feet (the default 0.1 m is a hurdle to jump over).
    curriculum = CurriculumConfig(
        stage="obstacle", initial_level=10, upward_fraction=0.0, obstacle_depth_m=0.6
    )
    env = _env(num_envs=2, curriculum=curriculum, simulator=simulator)
    env.reset(seed=0)
    for i in range(2):
        centre, size = env.command[i, OBSTACLE_CENTRE].numpy(), env.command[i, OBSTACLE_SIZE].numpy()
        low, high = _box_bounds(env, i)
        assert np.allclose(0.5 * (low + high), centre, atol=1e-4)
        assert np.allclose(high - low, size, atol=1e-4)
    # Dropped onto the box top, the robot's feet touch down at the box's height, not the floor's.
    drop = env.sim.robot.standing_qpos.copy()
    top = float(env.command[0, OBSTACLE_SIZE][2])
    drop[0] = float(env.command[0, OBSTACLE_CENTRE][0])
    drop[2] += top + 0.1
    env.sim.reset_idx(np.array([0]), qpos=drop[None])
    for _ in range(25):  # 0.5 s: fallen 0.1 m and settled
        state = env.sim.step(np.zeros((2, ACTION_DIM)))
    assert state.foot_contact[0].all() and not state.trunk_contact[0]
    assert state.base_pos_w[0, 2] > top + 0.2, "the feet stand on the box"
    # A zero size takes the box away.
    env.sim.set_obstacles(np.array([1]), np.zeros((1, 3)), np.zeros((1, 3)))
    low, high = _box_bounds(env, 1)
    assert high[2] <= 0.0, "a removed box must not stand above the floor"


def _box_bounds(env: QuadrupedJumpEnv, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Env i's obstacle box, lowest and highest corner relative to the env's origin [m] (below the floor
    when it has none)."""
    if env.config.simulator == "mujoco":
        model, box = env.sim.models[i], env.sim.robot.obstacle_geom_id
        return model.geom_pos[box] - model.geom_size[box], model.geom_pos[box] + model.geom_size[box]
    import pybullet as p

    sim = env.sim
    if i not in sim._boxes:
        return np.full(3, -1.0), np.full(3, -1.0)
    low, high = p.getAABB(sim._boxes[i], physicsClientId=sim._client)
    return np.subtract(low, sim._origins[i]), np.subtract(high, sim._origins[i])


def test_standing_robot_at_zero_action_neither_jumps_nor_terminates() -> None:
    env = _env(upward_episode_s=1.0)
    obs = env.reset(seed=0)
    assert obs.shape == (2, OBSERVATION_DIM) == (2, sum(size for _, size, _, _ in OBSERVATION_FIELDS))
    assert env.privileged_observation().shape == (2, PRIVILEGED_DIM)
    steps = round(1.0 / env.dt)
    for step in range(steps):
        obs, _, terminated, truncated, info = env.step(torch.zeros(2, ACTION_DIM))
        assert not terminated.any(), f"terminated at step {step}: {info.get('episode')}"
        assert not info["phase"]["has_jumped"].any() and not info["success"].any()
    assert truncated.all(), "the 1 s episode should end by time-out on its last step"
    assert info["episode"]["success_rate"] == 0.0
    assert abs(info["episode"]["apex_gain_m_mean"]) < 0.02


def test_scripted_drop_registers_flight_then_landing() -> None:
    env = _env(num_envs=1, upward_episode_s=1.0)
    env.reset(seed=0)
    raised = env.sim.robot.standing_qpos.copy()
    raised[2] += DROP_HEIGHT_M
    env.sim.reset_idx(np.array([0]), qpos=raised[None])
    phases, episode_return, done = [], 0.0, False
    while not done:  # at zero action the robot rebounds and may drift out of its landing spot
        _, reward, terminated, truncated, info = env.step(torch.zeros(1, ACTION_DIM))
        phases.append({k: v.item() for k, v in info["phase"].items()})
        episode_return += reward.item()
        done = bool(terminated.item() or truncated.item())
    assert phases[0]["in_flight"] and phases[0]["has_jumped"] and not phases[0]["has_landed"]
    landings = [i for i, p in enumerate(phases) if p["landed"]]
    assert len(landings) == 1, "exactly one first landing"
    assert all(p["in_flight"] for p in phases[: landings[0]])
    assert all(p["has_landed"] for p in phases[landings[0] :])
    free_fall_steps = math.sqrt(2.0 * DROP_HEIGHT_M / 9.81) / env.dt
    assert abs(landings[0] + 1 - free_fall_steps) <= 1.0
    episode = info["episode"]
    assert episode["apex_gain_m_mean"] == pytest.approx(DROP_HEIGHT_M, abs=0.01)
    assert episode["landing_error_m_mean"] < 0.05
    assert episode["reward/task_position"] > 0.9 * 1500 * env.dt, "landing on target earns the task reward"
    assert info["success"].item() == truncated.item()
    sums = sum(v for k, v in episode.items() if k.startswith("reward/"))
    assert sums == pytest.approx(episode_return, rel=1e-5)


def test_a_landing_that_falls_short_earns_more_the_nearer_it_came() -> None:
    """The task kernel pays almost nothing 0.3 m short; with the distance term a landing still ranks."""
    # No landing-error termination, which would reset (and zero the sums of) the robots that miss.
    env = _env(num_envs=3, upward_episode_s=1.0, termination=TerminationConfig(max_landing_error_m=10.0))
    env.reset(seed=0)
    raised = np.tile(env.sim.robot.standing_qpos, (3, 1))
    raised[:, 2] += DROP_HEIGHT_M
    env.sim.reset_idx(np.arange(3), qpos=raised)
    env.target_pos_w[:, 0] += torch.tensor([0.0, 0.3, 0.8])  # each lands this far short of its target
    paid = {"task_position": torch.zeros(3), "task_distance": torch.zeros(3)}
    landed = torch.zeros(3, dtype=torch.bool)
    for _ in range(round(0.5 / env.dt)):  # a 0.4 m drop lands within 0.3 s
        before = {k: env.episode_sums[k].clone() for k in paid}
        *_, info = env.step(torch.zeros(3, ACTION_DIM))
        now = info["phase"]["landed"]
        for k in paid:
            paid[k] += torch.where(now, env.episode_sums[k] - before[k], 0.0)
        landed |= now
    assert landed.all()
    on_target = env.config.reward.task_position * env.dt
    total = paid["task_position"] + paid["task_distance"]
    assert total[0] == pytest.approx(on_target, rel=0.05), "no more than the task kernel on target"
    assert total[0] > total[1] > total[2] > 0.05 * on_target
    assert total[1] > 0.4 * on_target and paid["task_position"][1] < 0.2 * on_target
    assert paid["task_position"][2] < 1e-4 * on_target


def test_reward_terms_are_finite_and_episode_sums_add_up_to_the_reward() -> None:
    env = _env(num_envs=4, curriculum=CurriculumConfig(stage="forward", initial_level=6))
    env.reset(seed=1)
    g = torch.Generator().manual_seed(0)
    returns, ever_done = torch.zeros(4), torch.zeros(4, dtype=torch.bool)
    for _ in range(25):
        _, reward, terminated, truncated, _ = env.step(0.5 * torch.randn(4, ACTION_DIM, generator=g))
        assert torch.isfinite(reward).all()
        returns += reward
        ever_done |= terminated | truncated
    assert not ever_done.all()
    sums = torch.stack(list(env.episode_sums.values()))
    assert torch.isfinite(sums).all()
    active = {name for name, total in env.episode_sums.items() if (total != 0).any()}
    assert {"max_height", "linvel_tracking", "symmetry", "action_rate", "energy"} <= active
    kept = ~ever_done
    assert torch.allclose(sums.sum(0)[kept], returns[kept], rtol=1e-5, atol=1e-6)


def test_nan_action_terminates_only_its_env() -> None:
    clean, dirty = _env(num_envs=3), _env(num_envs=3)
    clean.reset(seed=2), dirty.reset(seed=2)
    action = torch.full((3, ACTION_DIM), 0.2)
    bad = action.clone()
    bad[1, 5] = float("nan")
    expected, *_ = clean.step(action)
    obs, reward, terminated, truncated, info = dirty.step(bad)
    assert terminated.tolist() == [False, True, False] and not truncated.any()
    assert info["nonfinite"].tolist() == [False, True, False]
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
    assert torch.isfinite(info["final_obs"]).all() and info["episode"]["termination/nonfinite"] == 1.0
    assert torch.equal(obs[[0, 2]], expected[[0, 2]])
    assert dirty.episode_step.tolist() == [1, 0, 1]


def test_reset_with_a_seed_repeats_the_commands() -> None:
    env = _env(num_envs=8, curriculum=CurriculumConfig(stage="forward", initial_level=8))
    first = env.reset(seed=7)
    commands = env.command.clone()
    env.step(torch.zeros(8, ACTION_DIM))
    assert not torch.equal(env.reset(seed=8), first)
    assert torch.equal(env.reset(seed=7), first) and torch.equal(env.command, commands)
    assert (commands[:, 0] > 0).any()


def test_randomisation_draws_per_env_parameters_and_delays_actions() -> None:
    rand = RandomisationConfig(enabled=True, action_delay_steps=(2, 2))
    env = _env(num_envs=4, randomisation=rand)
    env.reset(seed=3)
    robot = env.sim.robot
    masses = np.array([m.body_mass[robot.trunk_body_id] for m in env.sim.models])
    assert len(set(masses.tolist())) == 4 and ((masses >= 3.7) & (masses <= 7.72)).all()
    friction = env.randomisation[:, 1]
    assert ((friction >= 0.4) & (friction <= 1.5)).all()
    default = torch.as_tensor(robot.config.standing_joint_pos, dtype=torch.float32)
    targets = []
    for _ in range(3):
        env.step(torch.full((4, ACTION_DIM), 0.4))
        targets.append(env._state.joint_target.clone())
    assert torch.allclose(targets[0], default.expand(4, -1)) and torch.allclose(targets[1], targets[0])
    assert not torch.allclose(targets[2], targets[0]), "a 2-step delay applies the action on the third step"


def test_contact_impedance_ratio_is_randomised_log_uniform_per_env_and_off_by_default() -> None:
    base = RandomisationConfig(enabled=True)
    plain = _env(num_envs=64, randomisation=base)
    plain.reset(seed=3)
    assert {m.opt.impratio for m in plain.sim.models} == {1.0}
    stiff = _env(num_envs=64, randomisation=dataclasses.replace(base, impratio=(1.0, 10.0)))
    stiff.reset(seed=3)
    ratio = np.array([m.opt.impratio for m in stiff.sim.models])
    assert ratio.min() >= 1.0 and ratio.max() <= 10.0 and len(set(ratio.tolist())) == 64
    assert 0.3 < (ratio < math.sqrt(10.0)).mean() < 0.7, "log-uniform: half below the geometric mean"
    assert torch.equal(plain.randomisation, stiff.randomisation), "the other draws are unchanged"
    assert build_a1(A1Config(impratio=10.0)).model.opt.impratio == 10.0
    with pytest.raises(ValueError, match="impratio"):
        RandomisationConfig(impratio=(0.5, 2.0))
    with pytest.raises(ValueError, match="impratio"):
        A1Config(impratio=0.0)


def test_foot_kinematics_match_mujoco() -> None:
    env = _env(num_envs=1)
    robot, model = env.sim.robot, env.sim.robot.model
    data = mujoco.MjData(model)
    q = np.random.default_rng(0).uniform(robot.joint_range[:, 0], robot.joint_range[:, 1])
    data.qpos[robot.joint_qpos_adr] = q  # qpos0 puts the trunk at the origin, unrotated
    mujoco.mj_kinematics(model, data)
    offsets = torch.as_tensor(_leg_offsets(env.sim), dtype=torch.float32)
    feet = _foot_positions_b(torch.as_tensor(q, dtype=torch.float32)[None], offsets)[0]
    assert np.allclose(feet.numpy(), data.xpos[robot.foot_body_ids], atol=1e-5)
