"""The RAPTOR pipeline: the student's architecture, the batched teacher farm, DAgger, the student bundle,
the Ray backend and `robotrl train raptor` end to end on tiny budgets."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import torch
from torch import nn

from robotrl.algos.distill import DAgger, DistillConfig
from robotrl.algos.ppo import PPO, PPOConfig
from robotrl.cli import main
from robotrl.config import to_dict
from robotrl.envs.quadrotor.env import (
    TEACHER_FIELDS,
    TEACHER_OBSERVATION_DIM,
    ChangeConfig,
    InitConfig,
    QuadrotorEnv,
    teacher_observation,
)
from robotrl.envs.quadrotor.observations import ACTION_DIM, OBSERVATION_DIM
from robotrl.policies.grouped_mlp import GroupedActorCritic
from robotrl.policies.recurrent_student import RecurrentStudent
from robotrl.recipes import raptor, raptor_farm
from robotrl.recipes.quadrotor import prepare_run_dir
from robotrl.recipes.raptor import StudentController, distillation_teachers, student_env
from robotrl.recipes.raptor_config import RaptorTrainConfig, load_config
from robotrl.recipes.raptor_farm import (
    TeacherFarm,
    assemble_farm,
    load_teacher_farm,
    retry_teachers,
    sample_quadrotors,
    save_farm,
    train_farm,
)
from robotrl.runtime.policy_runner import PolicyRunner

TINY = [
    "farm.num_teachers=4", "farm.group_size=2", "farm.envs_per_teacher=16", "farm.iterations=2",
    "farm.precision_iterations=1",
    "farm.eval_episodes=2", "farm.eval_duration_s=1.0", "farm.keep_success_rate=0.0",
    "farm.keep_rmse_m=100.0", "farm.speedup_iterations=1", "student.envs_per_teacher=2",
    "student.distill.bc_rollouts=1", "student.distill.dagger_rollouts=1", "student.distill.rollout_steps=40",
    "student.distill.updates_per_rollout=2", "threads=1",
]  # fmt: skip
"""A farm that trains in seconds; keep thresholds open so that every teacher reaches the student."""


def test_student_is_exactly_raptors_2084_parameter_architecture() -> None:
    student = RecurrentStudent()
    layers = [(name, type(m)) for name, m in student.named_children()]
    assert layers == [("input_layer", nn.Linear), ("gru", nn.GRU), ("output_layer", nn.Linear)]
    assert (student.input_layer.in_features, student.input_layer.out_features) == (22, 16)
    assert (student.gru.input_size, student.gru.hidden_size, student.gru.num_layers) == (16, 16, 1)
    assert (student.output_layer.in_features, student.output_layer.out_features) == (16, 4)
    assert student.parameter_count() == 2084
    assert not student.initial_state.requires_grad and torch.all(student.initial_state == 0)
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    assert trainable == 2084 - 16


def test_student_step_equals_its_sequence() -> None:
    student = RecurrentStudent()
    obs = torch.randn(30, 3, 22)
    sequence, last = student.sequence(obs)
    hidden = student.initial(3)
    for t in range(30):
        action, hidden = student(obs[t], hidden)
        torch.testing.assert_close(action, sequence[t].clamp(-1, 1))
    torch.testing.assert_close(hidden, last)


def _grouped(groups: int = 3, offset_obs_columns: tuple[int, int] | None = None) -> GroupedActorCritic:
    torch.manual_seed(0)
    return GroupedActorCritic(
        groups,
        22,
        QuadrotorEnv.privileged_dim,
        4,
        activation="relu",
        init_log_std=-1.0,
        offset_obs_columns=offset_obs_columns,
    )


@pytest.mark.parametrize("offset_obs_columns", [None, (18, 22)])
def test_a_farm_member_is_the_same_policy_alone(offset_obs_columns: tuple[int, int] | None) -> None:
    farm = _grouped(offset_obs_columns=offset_obs_columns)
    with torch.no_grad():
        for p in farm.actor.parameters():
            p.add_(0.1 * torch.randn_like(p))  # away from the small-last-layer initialisation
    obs, privileged = torch.randn(3 * 5, 22), torch.randn(3 * 5, QuadrotorEnv.privileged_dim)
    means, values = farm.action_mean(obs), farm.value(privileged)
    for g in range(3):
        rows = slice(5 * g, 5 * (g + 1))
        alone = farm.member(g)
        torch.testing.assert_close(alone.action_mean(obs[rows]), means[rows])
        torch.testing.assert_close(alone.value(privileged[rows]), values[rows])
        torch.testing.assert_close(alone.deterministic_actor()(obs[rows]), means[rows].clamp(-1, 1))
    pair = farm.select([2, 0])
    torch.testing.assert_close(
        pair.action_mean(torch.cat((obs[10:15], obs[0:5]))), torch.cat((means[10:15], means[0:5]))
    )
    if offset_obs_columns is not None:  # the columns are added on top of the network's output
        without = farm.select([0, 1, 2])
        without.member_kwargs["offset_obs_columns"] = None
        torch.testing.assert_close(means - without.action_mean(obs), obs[:, 18:22])


def _fill_storage(ppo: PPO, generator: torch.Generator, member_1_scale: float) -> None:
    s = ppo.storage
    for buf in (s.obs, s.privileged_obs, s.actions):
        buf.copy_(torch.randn(buf.shape, generator=generator))
    s.rewards.copy_(torch.randn(s.rewards.shape, generator=generator))
    half = s.rewards.shape[1] // 2
    s.rewards[:, half:] *= member_1_scale  # only the second member's data differs between the runs
    s.obs[:, half:] *= member_1_scale
    s.privileged_obs[:, half:] *= member_1_scale
    with torch.no_grad():
        for t in range(s.obs.shape[0]):
            s.log_probs[t] = ppo.policy.distribution(s.obs[t]).log_prob(s.actions[t]).sum(-1)
    s.dones.zero_()
    s.step = s.obs.shape[0]
    ppo.compute_returns(torch.randn(s.obs.shape[1], s.privileged_obs.shape[-1], generator=generator))


def test_each_member_learns_as_if_alone() -> None:
    """Member 0's update does not depend on member 1's data (advantages, clipping and loss per member)."""
    results = []
    for scale in (1.0, 25.0):
        ppo = PPO(_grouped(2), PPOConfig(num_steps=8, desired_kl=0.0), num_envs=2 * 16, seed=0)
        _fill_storage(ppo, torch.Generator().manual_seed(1), scale)
        ppo.update()
        ppo.compute_returns(torch.zeros(ppo.storage.obs.shape[1], QuadrotorEnv.privileged_dim))
        results.append({k: v.detach().clone() for k, v in ppo.policy.named_parameters()})
    # And each env's value is its own member's critic's (rollout storage is step-major, the farm group-major).
    s = ppo.storage
    for g in range(2):
        rows = slice(16 * g, 16 * (g + 1))
        with torch.no_grad():
            own = torch.stack([ppo.policy.member(g).value(p[rows]) for p in s.privileged_obs])
        torch.testing.assert_close(s.values[:, rows], own)
    for name, tensor in results[0].items():
        torch.testing.assert_close(tensor[0], results[1][name][0], msg=f"member 0's {name} changed")
        assert not torch.equal(tensor[1], results[1][name][1]), f"member 1's {name} did not see its own data"


def test_precision_iterations_fix_the_action_std_and_keep_training_the_mean(tmp_path: Path) -> None:
    config = load_config(overrides=[*TINY, "farm.precision_iterations=2", "farm.precision_action_std=0.02"])
    result = raptor_farm.train_members(config, [0, 1], seed=0, out_dir=tmp_path, progress=False)
    assert result["policy"]["log_std"].exp() == pytest.approx(torch.full((2, 4), 0.02))
    checkpoints = sorted((tmp_path / "checkpoints").glob("iter_*.pt"))
    assert [c.name for c in checkpoints] == ["iter_000002.pt", "iter_000004.pt"]
    before, after = (torch.load(c, weights_only=False)["ppo"]["policy"] for c in checkpoints)
    assert before["log_std"].exp().min() > 0.05  # the learnt std of the first iterations, not fixed
    changed = [k for k in before if k.startswith("actor.") and not torch.equal(before[k], after[k])]
    assert changed, "the precision iterations did not train the actor's mean"


def test_dagger_fits_the_student_to_its_teacher() -> None:
    """A teacher that is a fixed function of the observation: the distillation loss must fall."""
    config = load_config(None, TINY)
    farm_params = sample_quadrotors(config.farm)
    nominal = {"changes": ChangeConfig(), "disturbance_max_weight_fraction": 0.0}  # the teacher ignores them
    env = QuadrotorEnv(
        dataclasses.replace(config.env, num_envs=16, platform="raptor", **nominal),
        params=farm_params.index(torch.arange(4)).repeat_each(4),
    )
    hover = env.params.hover_action().unsqueeze(-1)

    def teacher(privileged: torch.Tensor) -> torch.Tensor:
        return (hover - 0.3 * privileged[:, 2:3] - 0.1 * privileged[:, 14:15]).clamp(-1, 1).expand(-1, 4)

    torch.manual_seed(0)
    config = DistillConfig(
        rollout_steps=60, updates_per_rollout=25, minibatch_sequences=16, learning_rate=3e-3
    )
    dagger = DAgger(RecurrentStudent(), teacher, config)
    untrained = dagger.collect(env, teacher_drives=False)["distill/on_policy_action_mse"]
    dagger.collect(env, teacher_drives=True)
    losses = [dagger.update()["loss/distill_mse"] for _ in range(6)]
    assert losses[-1] < 0.3 * losses[0], losses
    # On its own states the trained student is much closer to its teacher than the untrained one was.
    trained = dagger.collect(env, teacher_drives=False)["distill/on_policy_action_mse"]
    assert trained < 0.3 * untrained, (untrained, trained)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("raptor") / "run"
    args = ["train", "raptor", "--run-dir", str(run), "--no-progress"]
    assert main([*args, *(a for item in TINY for a in ("--set", item))]) == 0
    return run


def test_train_raptor_writes_teachers_student_and_a_recurrent_bundle(tiny_run: Path) -> None:
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["teachers_trained"] == 4 and summary["student_parameters"] == 2084
    assert summary["speedup"]["speedup"] > 0
    assert (tiny_run / "teachers.md").read_text().startswith(f"{summary['teachers_kept']} of 4 teachers kept")
    runner = PolicyRunner(tiny_run / "bundle")
    (state,) = runner.spec.policy.recurrent_state
    assert (state.input_name, state.output_name, state.shape) == ("hidden", "hidden_next", (1, "batch", 16))
    assert state.initial == (0.0,) * 16
    # The bundle carries the GRU state exactly as the torch student does, step after step.
    farm = load_teacher_farm(tiny_run)
    config = load_config(tiny_run / "config.yaml")
    env = student_env(config, farm, [0, 1])
    student = RecurrentStudent()
    student.load_state_dict(
        torch.load(tiny_run / "student" / "checkpoint.pt", weights_only=False)["dagger"]["student"]
    )
    reference = StudentController(student)
    reference.reset(env.num_envs)
    runner.reset(env.num_envs)
    obs = env.reset().numpy()
    for _ in range(50):
        expected = reference.act(obs)
        np.testing.assert_allclose(runner.step(obs), expected, atol=1e-5)
        obs = env.step(torch.from_numpy(expected))[0].numpy()
    assert not np.allclose(runner.state["hidden"], 0.0)


def test_student_changes_probability_gives_the_distillation_flights_changes_the_teachers_never_had(
    tiny_run: Path,
) -> None:
    farm = load_teacher_farm(tiny_run)
    config = load_config(tiny_run / "config.yaml")
    assert config.env.changes.probability == 0.0
    config.env.changes = dataclasses.replace(config.env.changes, window_s=(0.01, 0.02))
    config.student = dataclasses.replace(config.student, changes_probability=1.0)
    env = student_env(config, farm, [0, 1])
    env.reset()
    hover = farm.params.index(torch.tensor([0, 1])).repeat_each(config.student.envs_per_teacher)
    for _ in range(3):
        env.step(hover.rotor_hover_action())
    heavier = env.params.mass > env.nominal_params.mass
    weaker = (env.params.rotor_thrust_scale < 1.0).any(-1)
    pushed = env.disturbance_force_w.norm(dim=-1) > 0  # the teachers' config has no constant disturbance
    assert bool((heavier | weaker | pushed).all())
    with pytest.raises(ValueError, match="changes_probability"):
        dataclasses.replace(config.student, changes_probability=1.5)


def test_the_least_and_the_most_agile_kept_teachers_are_repeated_without_overlap() -> None:
    """Roll authorities chosen by hand; teacher 4, the most agile, was not kept and must not count."""
    authority = torch.tensor([500.0, 100.0, 900.0, 300.0, 1100.0, 700.0, 200.0, 1000.0, 50.0, 800.0])
    kept = torch.ones(10, dtype=torch.bool)
    kept[4] = False
    farm = cast(TeacherFarm, SimpleNamespace(kept=kept, params=SimpleNamespace(roll_authority=authority)))
    config = RaptorTrainConfig()
    config.student = dataclasses.replace(
        config.student,
        least_agile_fraction=0.2,  # 2 of the 9 kept: teachers 8 and 1
        least_agile_envs_factor=3,
        most_agile_fraction=0.2,  # 2: teachers 7 and 2
        most_agile_envs_factor=2,
    )
    assert distillation_teachers(config, farm) == [0, 1, 1, 1, 2, 2, 3, 5, 6, 7, 7, 8, 8, 8, 9]
    # Rounding may ask for more than is left: 3 kept, half each way rounds to 2 + 2; the most agile end
    # gets the one teacher the least agile end left.
    kept = torch.tensor([True, True, False, False, False, False, False, False, True, False])  # 500, 100, 50
    farm = cast(TeacherFarm, SimpleNamespace(kept=kept, params=SimpleNamespace(roll_authority=authority)))
    config.student = dataclasses.replace(config.student, least_agile_fraction=0.5, most_agile_fraction=0.5)
    assert distillation_teachers(config, farm) == [0, 0, 1, 1, 1, 8, 8, 8]


def test_least_and_most_agile_teachers_fly_more_distillation_envs_each_labelled_by_its_own_teacher(
    tiny_run: Path,
) -> None:
    farm = load_teacher_farm(tiny_run)
    config = load_config(tiny_run / "config.yaml")
    kept = farm.kept.nonzero().squeeze(-1).tolist()
    config.student = dataclasses.replace(config.student, least_agile_fraction=0.0, most_agile_fraction=0.0)
    assert len(kept) >= 2 and distillation_teachers(config, farm) == kept  # each kept teacher once
    config.student = dataclasses.replace(
        config.student,
        least_agile_fraction=0.5,
        least_agile_envs_factor=3,
        most_agile_fraction=0.5,
        most_agile_envs_factor=2,
    )
    teachers = distillation_teachers(config, farm)
    authority = farm.params.roll_authority
    by_authority = sorted(kept, key=lambda t: float(authority[t]))
    # Half each way: every kept teacher is at one end, none at both (with 3 kept, both halves round to 2).
    half = round(0.5 * len(kept))
    least_agile, most_agile = by_authority[:half], by_authority[half:]
    assert teachers == sorted(kept + least_agile * 2 + most_agile)
    k = config.student.envs_per_teacher
    env = student_env(config, farm, teachers)
    assert env.num_envs == (len(kept) + 2 * len(least_agile) + len(most_agile)) * k
    assert torch.equal(env.params.mass, farm.params.mass[torch.tensor(teachers)].repeat_interleave(k))
    # Each block of envs is labelled by the teacher of its quadrotor, duplicates included.
    env.reset()
    labels = farm.actor(teachers, k)(teacher_observation(env.privileged_observation()))
    for row, t in enumerate(teachers):
        alone = farm.actor([t], k)(teacher_observation(env.privileged_observation()[row * k : (row + 1) * k]))
        torch.testing.assert_close(labels[row * k : (row + 1) * k], alone)
    with pytest.raises(ValueError, match="least_agile"):
        dataclasses.replace(config.student, least_agile_envs_factor=0)
    with pytest.raises(ValueError, match="most_agile"):
        dataclasses.replace(config.student, most_agile_fraction=1.5)
    with pytest.raises(ValueError, match="overlap"):
        dataclasses.replace(config.student, least_agile_fraction=0.6, most_agile_fraction=0.6)


def test_teachers_read_only_the_extra_inputs_their_training_moved(tiny_run: Path) -> None:
    """Trained without disturbances and changes, a teacher ignores a disturbance it is shown (the weights on
    that input never trained); trained with them, it reads it, unless it was never told the disturbance; a
    change input moves only teachers trained with changes."""
    config = load_config(tiny_run / "config.yaml")
    trained = torch.load(tiny_run / "teachers" / "group_000.pt", weights_only=False)  # as PPO left it
    members, group_state = trained["members"], trained["policy"]
    params = sample_quadrotors(config.farm)
    calm = torch.zeros(len(members) * 3, TEACHER_OBSERVATION_DIM)
    calm[:, 2] = 0.3  # 0.3 m above the target
    pushed = calm.clone()
    assert TEACHER_FIELDS[0] == "disturbance_accel_w"
    pushed[:, OBSERVATION_DIM : OBSERVATION_DIM + 3] = 2.0  # [m/s^2]

    def actions(config: RaptorTrainConfig, obs: torch.Tensor) -> torch.Tensor:
        return raptor_farm._trained_group(config, params, members, group_state).deterministic_actor()(obs)

    heavier = calm.clone()
    heavier[:, OBSERVATION_DIM + 3 + 4] = 0.3  # log mass ratio, after the disturbance and the rotors

    torch.testing.assert_close(actions(config, pushed), actions(config, calm), rtol=0, atol=0)
    config.env.disturbance_max_weight_fraction = 0.3
    assert not torch.allclose(actions(config, pushed), actions(config, calm))
    torch.testing.assert_close(actions(config, heavier), actions(config, calm), rtol=0, atol=0)
    config.env.teacher_sees_disturbance = False
    torch.testing.assert_close(actions(config, pushed), actions(config, calm), rtol=0, atol=0)
    config.env.changes = dataclasses.replace(config.env.changes, probability=0.5)
    torch.testing.assert_close(actions(config, pushed), actions(config, calm), rtol=0, atol=0)
    assert not torch.allclose(actions(config, heavier), actions(config, calm))
    config.env.teacher_sees_disturbance = True
    assert not torch.allclose(actions(config, pushed), actions(config, calm))


def test_a_teacher_trained_without_changes_meets_a_payload_and_a_weak_rotor_with_the_hover_change(
    tiny_run: Path,
) -> None:
    """Holding the new hover after a payload and a weak rotor, a teacher trained without changes sees what it
    saw holding the old one, bar the change inputs whose weights are zeroed: it commands its old action plus
    each rotor's hover change, nothing else (teacher_observation reads the previous action relative to it)."""
    farm = load_teacher_farm(tiny_run)
    config = load_config(tiny_run / "config.yaml")
    env_config = dataclasses.replace(
        raptor_farm.group_env_config(config, farm.num_teachers, 1, seed=3),
        init=InitConfig(position_m=0.1, tilt_deg=5.0, velocity_mps=0.1, angular_velocity_radps=0.1),
    )
    env = QuadrotorEnv(env_config, params=farm.params)
    env.reset()
    previous = slice(OBSERVATION_DIM - ACTION_DIM, OBSERVATION_DIM)
    before = env.privileged_observation()
    before[:, previous] = env.params.rotor_hover_action()
    weak = env.params.rotor_thrust_scale.clone()
    weak[:, 2] = 0.9
    heavier = dataclasses.replace(env.params, mass=env.params.mass * 1.1, rotor_thrust_scale=weak)
    env.dynamics.set_params(heavier)
    after = env.privileged_observation()
    after[:, previous] = env.params.rotor_hover_action()
    change = env.params.rotor_hover_action() - env.nominal_params.rotor_hover_action()
    assert bool((change[:, 2] > change[:, 0]).all()) and bool((change > 0).all())
    seen_before, seen_after = teacher_observation(before), teacher_observation(after)
    torch.testing.assert_close(seen_after[:, :OBSERVATION_DIM], seen_before[:, :OBSERVATION_DIM])
    teachers = farm.actor(list(range(farm.num_teachers)), 1)
    unclipped = (env.params.rotor_hover_action() < 0.9).all(-1)
    assert bool(unclipped.any())
    torch.testing.assert_close(
        (teachers(seen_after) - teachers(seen_before))[unclipped], change[unclipped], rtol=0, atol=1e-5
    )


def test_a_teacher_not_told_the_disturbance_sees_zeros_where_it_would_be() -> None:
    config = dataclasses.replace(
        RaptorTrainConfig().env, num_envs=8, observation="teacher", disturbance_max_weight_fraction=0.3
    )
    told = QuadrotorEnv(config).reset()
    untold = QuadrotorEnv(dataclasses.replace(config, teacher_sees_disturbance=False)).reset()
    columns = slice(OBSERVATION_DIM, OBSERVATION_DIM + 3)
    assert bool((told[:, columns].norm(dim=-1) > 0).all())
    assert bool((untold[:, columns] == 0).all())
    torch.testing.assert_close(untold[:, :OBSERVATION_DIM], told[:, :OBSERVATION_DIM], rtol=0, atol=0)
    torch.testing.assert_close(untold[:, columns.stop :], told[:, columns.stop :], rtol=0, atol=0)


def test_resume_reuses_the_finished_stages(tiny_run: Path) -> None:
    before = json.loads((tiny_run / "stages.json").read_text())
    assert main(["train", "raptor", "--run-dir", str(tiny_run), "--resume", "--no-progress"]) == 0
    after = json.loads((tiny_run / "stages.json").read_text())
    assert after["teachers_wall_s"] == before["teachers_wall_s"]  # the farm was not trained again
    assert after["speedup"] == before["speedup"]


@pytest.mark.parametrize(("stop", "code"), [("ctrl-c", 130), ("sigterm", 143)])
def test_an_interrupted_stage_keeps_its_time_and_what_came_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: str, code: int
) -> None:
    on_disk_at_start: list[dict[str, Any]] = []

    def interrupted(*args: object, **kwargs: object) -> None:
        on_disk_at_start.append(json.loads((tmp_path / "run" / "stages.json").read_text()))
        time.sleep(0.3)
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler or a closed session stops a run
        time.sleep(10)

    train = ["train", "raptor", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    train += [a for item in TINY for a in ("--set", item)]
    handler = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as patch:
        patch.setattr(raptor, "train_farm", interrupted)
        assert main(train) == code
    assert signal.getsignal(signal.SIGTERM) == handler  # restored for whatever runs next in this process
    first = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert first["teachers_wall_s"] >= 0.3 and first["speedup"]["speedup"] > 0
    # The speed-up was on disk before the teachers began: a run killed outright there keeps it too.
    assert on_disk_at_start[0]["speedup"] == first["speedup"]
    assert main([*train, "--resume"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["teachers_wall_s"] > first["teachers_wall_s"]
    assert summary["speedup"] == first["speedup"]  # measured once, not again on the resume
    assert summary["speedup_wall_s"] == first["speedup_wall_s"]


def test_ray_backend_trains_the_same_teachers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="robotrl.recipes.raptor_farm")
    config = load_config(None, TINY)
    local = train_farm(config, tmp_path / "local", progress=False)
    on_ray = train_farm(
        dataclasses.replace(config, farm=dataclasses.replace(config.farm, backend="ray")),
        tmp_path / "ray",
        progress=False,
    )
    assert [r["members"] for r in on_ray] == [r["members"] for r in local] == [[0, 1], [2, 3]]
    # Each backend logs every group as it lands, with how many are done (--no-progress runs show only this).
    landed = [m.split("; ")[1].split(",")[0] for m in caplog.messages if m.startswith("teacher group")]
    assert landed == ["1 of 2 groups done", "2 of 2 groups done"] * 2
    for a, b in zip(local, on_ray, strict=True):
        for name, tensor in a["policy"].items():
            torch.testing.assert_close(tensor, b["policy"][name], rtol=0, atol=0, msg=name)


def test_teachers_not_kept_are_retrained_and_a_kept_retry_teaches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The keep verdicts are scripted below: teacher 1 passes its retry, teacher 2 never does.
    scripted = ["farm.retries=2", "farm.keep_success_rate=0.5", "farm.keep_rmse_m=0.1"]
    config = load_config(None, [*TINY, *scripted])
    run = tmp_path / "run"
    prepare_run_dir(run, to_dict(config), resume=False)
    farm = assemble_farm(config, train_farm(config, run, progress=False))
    farm.kept[:] = torch.tensor([True, False, False, True])  # as if 1 and 2 had failed
    first = [farm.actor([t], 8) for t in range(4)]
    evaluate = raptor_farm.evaluate_per_quadrotor

    def teacher_1_passes_its_retry_2_never(config, params, controller):  # type: ignore[no-untyped-def]
        metrics = evaluate(config, params, controller)
        for i, mass in enumerate(params.mass):
            ok = int((farm.params.mass == mass).nonzero()) == 1
            metrics[i] = {**metrics[i], "success_rate": float(ok), "position_rmse_median_m": 0.01}
        return metrics

    monkeypatch.setattr(raptor_farm, "evaluate_per_quadrotor", teacher_1_passes_its_retry_2_never)
    assert retry_teachers(config, farm, run, progress=False) == 3  # [1, 2], then [2]
    assert farm.kept.tolist() == [True, True, False, True]
    assert [m["tries"] for m in farm.metrics] == [1.0, 2.0, 3.0, 1.0]
    obs = torch.randn(8, TEACHER_OBSERVATION_DIM)
    retried = torch.load(run / "teachers" / "retry_00.pt", weights_only=False)
    assert retried["members"] == [1, 2]
    retry_group = raptor_farm._trained_group(config, farm.params, [1, 2], retried["policy"])
    torch.testing.assert_close(farm.actor([1], 8)(obs), retry_group.select([0]).deterministic_actor()(obs))
    for t in (0, 2, 3):
        torch.testing.assert_close(farm.actor([t], 8)(obs), first[t](obs))
    assert not torch.allclose(farm.actor([1], 8)(obs), first[1](obs))  # a new seed, a new teacher
    # Together, with a group's teachers apart in the list (one call a group): each block of rows is
    # labelled by its own teacher, a repeated teacher in each of its blocks.
    together = [0, 1, 3, 2, 0]  # groups [0, 1] and [2, 3], retries [1, 2] and [2]
    rows = 0.1 * torch.randn(2 * len(together), TEACHER_OBSERVATION_DIM)  # near a hover: not clipped
    labels = farm.actor(together, 2)(rows)
    for block, t in enumerate(together):
        torch.testing.assert_close(
            labels[2 * block : 2 * block + 2], farm.actor([t], 2)(rows[2 * block : 2 * block + 2])
        )
    # The farm as saved reads back with the retry in place, and the rounds are not trained again.
    save_farm(farm, run / "teachers.pt")
    loaded = load_teacher_farm(run)
    torch.testing.assert_close(loaded.actor([0, 1, 2, 3], 2)(obs), farm.actor([0, 1, 2, 3], 2)(obs))
    again = assemble_farm(config, train_farm(config, run, progress=False))
    again.kept[:] = torch.tensor([True, False, False, True])
    stamp = (run / "teachers" / "retry_00.pt").stat().st_mtime_ns
    assert retry_teachers(config, again, run, progress=False) == 3
    assert (run / "teachers" / "retry_00.pt").stat().st_mtime_ns == stamp
    assert again.kept.tolist() == farm.kept.tolist()


def test_eval_takes_a_raptor_run_for_its_student(tiny_run: Path) -> None:
    from robotrl.cli import _resolve_target

    label, controller, robot = _resolve_target(str(tiny_run))
    assert label == "bundle:bundle" and robot == "raptor"
    assert controller.runner.spec.policy.recurrent_state  # type: ignore[attr-defined]


@pytest.mark.parametrize("platform", ["crazyflie", "x500"])
def test_the_committed_student_hovers_the_lightest_and_the_heaviest_named_platform(platform: str) -> None:
    """bundles/raptor_student (the default run's student) through onnxruntime, 32 random starts, 10 s."""
    from robotrl.cli import _RunnerController
    from robotrl.envs.quadrotor.env import QuadrotorEnvConfig
    from robotrl.envs.quadrotor.evaluation import fly, hover_metrics

    bundle = Path(__file__).resolve().parents[1] / "bundles" / "raptor_student"
    config = QuadrotorEnvConfig(num_envs=32, platform=platform, seed=7, initial_previous_action="zero")
    metrics = hover_metrics(fly(_RunnerController(bundle), config, 10.0))
    assert metrics["crashes"] == 0, metrics
    assert metrics["position_rmse_median_m"] < 0.06, metrics
