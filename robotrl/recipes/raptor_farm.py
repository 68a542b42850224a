"""The RAPTOR teacher farm: one PPO teacher per sampled quadrotor, trained a group at a time as one
batched network, then each flown on its own quadrotor to decide whether it is kept.

A group is trained from its own seed only and the partition into groups is the config's, so the local
backend (groups one after another in this process) and the Ray backend (one task a group) give the same
teachers. Ray costs about 1 ms a task here: a task is a whole group, never finer.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robotrl.algos.on_policy_runner import OnPolicyRunner, RunnerConfig
from robotrl.algos.ppo import PPO
from robotrl.config import ConfigError
from robotrl.cpu_training import configure_cpu_training
from robotrl.envs.quadrotor.env import (
    TEACHER_DISTURBANCE,
    TEACHER_FEEDFORWARD,
    TEACHER_OBSERVATION_DIM,
    ChangeConfig,
    InitConfig,
    QuadrotorEnv,
    QuadrotorEnvConfig,
)
from robotrl.envs.quadrotor.evaluation import (
    Controller,
    FlightLog,
    HoverCriterion,
    TorchController,
    fly,
    hover_metrics,
)
from robotrl.envs.quadrotor.params import QuadrotorParams
from robotrl.envs.quadrotor.platforms import RaptorDistribution
from robotrl.policies.grouped_mlp import GroupedActorCritic
from robotrl.recipes.raptor_config import FarmConfig, RaptorTrainConfig, load_run_config

TEACHERS_FILE = "teachers.pt"

log = logging.getLogger(__name__)


def sample_quadrotors(farm: FarmConfig) -> QuadrotorParams:
    return RaptorDistribution().sample(farm.num_teachers, torch.Generator().manual_seed(farm.sample_seed))


def group_members(farm: FarmConfig) -> list[list[int]]:
    """Teacher indices of each group, in order: the partition is the config's, never the backend's."""
    ids = list(range(farm.num_teachers))
    return [ids[i : i + farm.group_size] for i in range(0, len(ids), farm.group_size)]


def group_env_config(
    config: RaptorTrainConfig, members: int, envs_per_member: int, seed: int
) -> QuadrotorEnvConfig:
    return dataclasses.replace(config.env, num_envs=members * envs_per_member, platform="raptor", seed=seed)


def build_group(config: RaptorTrainConfig, params: QuadrotorParams) -> GroupedActorCritic:
    """Untrained teachers for the quadrotors `params` (one row each), each offset to its hover command:
    the nominal one ('hover') or each rotor's at the current mass and efficiencies ('rotor_hover': the nominal
    one plus the teacher observation's rotor_hover_change)."""
    offset = None
    if config.policy.action_offset in ("hover", "rotor_hover"):
        offset = params.rotor_hover_action()
    return GroupedActorCritic(
        params.num_envs,
        TEACHER_OBSERVATION_DIM,
        QuadrotorEnv.privileged_dim,
        QuadrotorEnv.action_dim,
        action_offset=offset,
        offset_obs_columns=TEACHER_FEEDFORWARD if config.policy.action_offset == "rotor_hover" else None,
        **config.policy.network_kwargs(),
    )


def _group_ppo(config: RaptorTrainConfig, params: QuadrotorParams, seed: int) -> tuple[QuadrotorEnv, PPO]:
    e = config.farm.envs_per_teacher
    torch.manual_seed(seed)
    env_params = params.repeat_each(e)
    env_config = dataclasses.replace(
        group_env_config(config, params.num_envs, e, seed), observation="teacher"
    )
    env = QuadrotorEnv(env_config, params=env_params)
    return env, PPO(build_group(config, params), config.ppo, env.num_envs, seed=seed)


def train_group(
    config: RaptorTrainConfig, group: int, run_dir: Path, progress: bool = True
) -> dict[str, Any]:
    """Train (or resume) one group of teachers; returns its final policy state and training stats."""
    members = group_members(config.farm)[group]
    out_dir = run_dir / "teachers" / f"group_{group:03d}"
    return train_members(config, members, config.seed * 1000 + group, out_dir, progress)


def train_members(
    config: RaptorTrainConfig, members: list[int], seed: int, out_dir: Path, progress: bool = True
) -> dict[str, Any]:
    """Train (or resume from out_dir) the teachers of `members` as one batched group from `seed`."""
    configure_cpu_training(config.threads)
    params = sample_quadrotors(config.farm).index(torch.as_tensor(members))
    env, ppo = _group_ppo(config, params, seed)
    farm = config.farm
    runner_config = RunnerConfig(
        max_iterations=farm.iterations, checkpoint_every=50, eval_every=0, stop_at_criterion=False
    )
    runner = OnPolicyRunner(env, ppo, out_dir, runner_config, progress=progress)
    checkpoint = runner.latest_checkpoint()
    if checkpoint is not None:
        runner.load(checkpoint)
    runner.learn()
    if farm.precision_iterations:
        ppo.fix_action_std(farm.precision_action_std)
        runner.config.max_iterations += farm.precision_iterations
        runner.learn()
    last = runner.history[-1] if runner.history else {}
    return {
        "members": members,
        "policy": ppo.policy.state_dict(),
        "train_wall_s": runner.wall_s,
        "env_steps": runner.env_steps,
        "reward_step_mean": last.get("reward/step_mean", float("nan")),
    }


def train_farm(config: RaptorTrainConfig, run_dir: Path, progress: bool = True) -> list[dict[str, Any]]:
    """Every group, on this process one after another or as Ray tasks; finished groups are reused."""
    groups = range(len(group_members(config.farm)))
    done_dir = run_dir / "teachers"
    done_dir.mkdir(parents=True, exist_ok=True)

    def done_path(g: int) -> Path:
        return done_dir / f"group_{g:03d}.pt"

    todo = [g for g in groups if not done_path(g).is_file()]
    start, finished, trained_s = time.perf_counter(), 0, 0.0

    def done(g: int, result: dict[str, Any]) -> None:
        # Each group is written as soon as it is done, so an interrupted farm resumes from the next one.
        nonlocal finished, trained_s
        torch.save(result, done_path(g))
        finished, trained_s = finished + 1, trained_s + result["train_wall_s"]
        # One after another a group takes its training time (a resumed one's too); Ray runs them side by side.
        per_group_s = (time.perf_counter() - start if config.farm.backend == "ray" else trained_s) / finished
        left_s = per_group_s * (len(todo) - finished)
        log.info(
            "teacher group %d (%d teachers) trained in %.0f s; %d of %d groups done, about %.0f min to go",
            g, len(result["members"]), result["train_wall_s"], len(groups) - len(todo) + finished,
            len(groups), left_s / 60,
        )  # fmt: skip

    if config.farm.backend == "ray" and todo:
        for g, result in _train_groups_on_ray(config, run_dir, todo):
            done(g, result)
    else:
        for g in todo:
            done(g, train_group(config, g, run_dir, progress))
    return [torch.load(done_path(g), weights_only=False) for g in groups]


def _train_groups_on_ray(
    config: RaptorTrainConfig, run_dir: Path, todo: list[int]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """One Ray task a group (about 1 ms of overhead a task: never finer than a group), yielded as done."""
    import os

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if config.farm.ray_address:
        ray.init(address=config.farm.ray_address)
    else:
        ray.init(address="local", num_cpus=config.threads, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=config.threads)(train_group)
        pending = {task.remote(config, g, run_dir, False): g for g in todo}
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(ready), ray.get(ready)
    finally:
        ray.shutdown()


# ------------------------------------------------------------------------------------------ the farm
@dataclass
class TeacherFarm:
    """Every trained teacher with its quadrotor; row q of `params` is teacher q's quadrotor."""

    params: QuadrotorParams
    kept: torch.Tensor
    """[T] bool: the teacher met the keep thresholds on its own quadrotor."""
    groups: list[GroupedActorCritic]
    members: list[list[int]]
    """Teacher ids of each group. A teacher in more than one group is the last one's: a kept retry."""
    metrics: list[dict[str, float]] = field(default_factory=list)
    """Per teacher: success_rate, position_rmse_median_m, crashes on its own quadrotor (of the teacher
    in use), and tries: how many times it was trained."""

    @property
    def num_teachers(self) -> int:
        return self.params.num_envs

    def actor(self, teachers: list[int], per_teacher: int) -> TeacherBlocks:
        """Deterministic actions of `teachers` for teacher observations (robotrl.envs.quadrotor.env.
        teacher_observation) [len(teachers) * per_teacher, TEACHER_OBSERVATION_DIM], rows teacher-major in
        the order given."""
        where = {t: (g, i) for g, ids in enumerate(self.members) for i, t in enumerate(ids)}
        # One batched call per group, however its teachers interleave with the retry group's in `teachers`:
        # a call per run of consecutive teachers made 113 calls a step for 1000 teachers, 9.3 ms against
        # 4.1 ms, about 1300 s of a 270-rollout distillation (bench/bench_teacher_labels.py).
        members: dict[int, list[int]] = {}
        rows: dict[int, list[int]] = {}
        for position, t in enumerate(teachers):
            g, i = where[t]
            members.setdefault(g, []).append(i)
            rows.setdefault(g, []).extend(range(position * per_teacher, (position + 1) * per_teacher))
        return TeacherBlocks(
            [self.groups[g].select(ids).deterministic_actor() for g, ids in members.items()],
            [torch.as_tensor(rows[g]) for g in members],
        )

    def controller(self, episodes_per_quadrotor: int) -> TorchController:
        """All teachers as one Controller (robotrl.envs.quadrotor.evaluation): row q*K+k flies quadrotor q."""
        return TorchController(
            self.actor(list(range(self.num_teachers)), episodes_per_quadrotor), observation="teacher"
        )


class TeacherBlocks(nn.Module):
    """Teacher actors each over its own rows (a selected group's teachers, teacher-major), one call each."""

    def __init__(self, actors: list[nn.Module], rows: list[torch.Tensor]):
        super().__init__()
        self.actors = nn.ModuleList(actors)
        self.rows = rows
        self.order = torch.argsort(torch.cat(rows))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.cat([actor(obs[rows]) for actor, rows in zip(self.actors, self.rows, strict=True)])[
            self.order
        ]


def _subset(log: FlightLog, episodes: slice) -> FlightLog:
    return FlightLog(
        log.dt, log.position_w[:, episodes], log.target_position_w[:, episodes], log.actions[:, episodes],
        log.crashed_at[episodes],
    )  # fmt: skip


def evaluate_per_quadrotor(
    config: RaptorTrainConfig, params: QuadrotorParams, controller: Controller
) -> list[dict[str, float]]:
    """Hover metrics per quadrotor, each from `farm.eval_episodes` seeded random starts.

    The flights are nominal (the suite's random starts, no disturbance force, no mid-flight change): whether
    a teacher flies its own quadrotor, as in the hover criterion, however hard the starts it trained from.
    The controller's rows are quadrotor-major: row q*K+k flies quadrotor q.
    """
    k = config.farm.eval_episodes
    env_config = dataclasses.replace(
        group_env_config(config, params.num_envs, k, seed=12345),
        observation_noise=0.0,
        init=InitConfig(),
        disturbance_max_weight_fraction=0.0,
        changes=ChangeConfig(),
    )
    criterion = HoverCriterion(episode_s=config.farm.eval_duration_s)
    flights = fly(
        controller,
        env_config,
        criterion.episode_s,
        params=params.repeat_each(k),
    )
    return [
        hover_metrics(_subset(flights, slice(q * k, (q + 1) * k)), criterion) for q in range(params.num_envs)
    ]


def _trained_group(
    config: RaptorTrainConfig, params: QuadrotorParams, members: list[int], state: dict[str, Any]
) -> GroupedActorCritic:
    group = build_group(config, params.index(torch.as_tensor(members)))
    group.load_state_dict(state)
    _zero_unseen_input_weights(config, group)
    return group.eval()


def _zero_unseen_input_weights(config: RaptorTrainConfig, group: GroupedActorCritic) -> None:
    """Teachers trained without disturbances and changes read their extra inputs only at 0: no gradient
    reached the first-layer weights on them, which are still their random initial values. Zeroed (an exact
    no-op on every flight they trained on), a change flown later, in the suite's adaptation flights or the
    student's (`student.changes_probability`), reaches them through their action offset, each rotor's hover
    command, and their feedback, not as noise through random weights. On runs/raptor-s23's 64 teachers
    (their own quadrotors, 4 starts each): back within 0.1 m in 1 s after mass / rotor 0.49 / 0.78 before,
    0.58 / 0.82 zeroed; the gust, which reaches them as a disturbance input, 0.36 / 0.35. The same holds
    for the disturbance of teachers not told it (`env.teacher_sees_disturbance: false`): zeroed, they
    ignore the suite's gusts as they ignored their training's forces."""
    env = config.env
    changes = env.changes.probability > 0  # a gust is a change, and it moves the disturbance input
    disturbance = env.teacher_sees_disturbance and (env.disturbance_max_weight_fraction > 0 or changes)
    unseen = [] if disturbance else [TEACHER_DISTURBANCE]
    if not changes:
        unseen.append((TEACHER_DISTURBANCE[1], TEACHER_OBSERVATION_DIM))
    with torch.no_grad():
        for start, stop in unseen:
            group.actor[0].weight[:, start:stop] = 0.0


def _passes(farm: FarmConfig, metrics: dict[str, float]) -> bool:
    return (
        metrics["success_rate"] >= farm.keep_success_rate
        and metrics["position_rmse_median_m"] <= farm.keep_rmse_m
    )


def assemble_farm(config: RaptorTrainConfig, results: list[dict[str, Any]]) -> TeacherFarm:
    params = sample_quadrotors(config.farm)
    groups = [_trained_group(config, params, r["members"], r["policy"]) for r in results]
    farm = TeacherFarm(
        params, torch.zeros(params.num_envs, dtype=torch.bool), groups, [r["members"] for r in results]
    )
    farm.metrics = [
        {**m, "tries": 1.0}
        for m in evaluate_per_quadrotor(config, params, farm.controller(config.farm.eval_episodes))
    ]
    farm.kept = torch.tensor([_passes(config.farm, m) for m in farm.metrics])
    return farm


def retry_teachers(config: RaptorTrainConfig, farm: TeacherFarm, run_dir: Path, progress: bool = True) -> int:
    """Retrain the teachers not kept, `farm.retries` rounds, each round one group from a new seed.

    A PPO seed that fails leaves its quadrotor out of what the student is taught (15 of 64 with
    changes on, README; a retry kept 4 of them). A retrained teacher joins the farm only if it is
    kept; otherwise the first stays, still not kept. Rounds are saved as they finish, so an
    interrupted run resumes. Returns how many teachers were retrained.
    """
    retrained = 0
    for r in range(config.farm.retries):
        failed = (~farm.kept).nonzero().squeeze(-1).tolist()
        if not failed:
            break
        path = run_dir / "teachers" / f"retry_{r:02d}.pt"
        if not path.is_file():
            seed = config.seed * 1000 + len(group_members(config.farm)) + r
            out_dir = run_dir / "teachers" / f"retry_{r:02d}"
            torch.save(train_members(config, failed, seed, out_dir, progress), path)
        result = torch.load(path, weights_only=False)
        if result["members"] != failed:
            raise ConfigError(
                f"{path} retrained teachers {result['members']}, but {failed} are not kept now: it belongs "
                "to another run; start a new --run-dir"
            )
        group = _trained_group(config, farm.params, failed, result["policy"])
        metrics = evaluate_per_quadrotor(
            config,
            farm.params.index(torch.as_tensor(failed)),
            TorchController(group.deterministic_actor(), observation="teacher"),
        )
        passed = [i for i, m in enumerate(metrics) if _passes(config.farm, m)]
        for i, t in enumerate(failed):
            in_use = metrics[i] if i in passed else farm.metrics[t]
            farm.metrics[t] = {**in_use, "tries": r + 2.0}
        if passed:
            farm.groups.append(group.select(passed).eval())
            farm.members.append([failed[i] for i in passed])
            farm.kept[[failed[i] for i in passed]] = True
        retrained += len(failed)
    return retrained


def save_farm(farm: TeacherFarm, path: Path) -> None:
    torch.save(
        {
            "params": dataclasses.asdict(farm.params),
            "kept": farm.kept,
            "groups": [g.state_dict() for g in farm.groups],
            "members": farm.members,
            "metrics": farm.metrics,
        },
        path,
    )


def load_teacher_farm(run_dir: str | Path) -> TeacherFarm:
    """The teachers of a `robotrl train raptor` run (after its teacher stage)."""
    run_dir = Path(run_dir)
    path = run_dir / TEACHERS_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist: {run_dir} is not a raptor run, or its teachers are not trained yet"
        )
    config = load_run_config(run_dir)
    state = torch.load(path, weights_only=False)
    params = QuadrotorParams(**state["params"])
    groups = [
        _trained_group(config, params, ids, group_state)
        for ids, group_state in zip(state["members"], state["groups"], strict=True)
    ]
    return TeacherFarm(params, state["kept"], groups, state["members"], state["metrics"])


# ------------------------------------------------------------------------------------------ speed
class _TimedTrainer:
    """One runner between timed blocks of PPO iterations, warmed up by one iteration when made."""

    def __init__(self, runner: OnPolicyRunner):
        self.runner = runner
        env = runner.env
        self.steps_per_iteration = runner.ppo.config.num_steps * env.num_envs
        self.state = runner.iterate(env.reset(), env.privileged_observation())[:2]

    def run(self, iterations: int = 0, seconds: float = 0.0) -> tuple[float, float]:
        """Iterate until both `iterations` and `seconds` are reached; (env-steps/s, elapsed s)."""
        done, start = 0, time.perf_counter()
        while done < iterations or time.perf_counter() - start < seconds:
            self.state = self.runner.iterate(*self.state)[:2]
            done += 1
        elapsed = time.perf_counter() - start
        return done * self.steps_per_iteration / elapsed, elapsed


def measure_farm_speedup(config: RaptorTrainConfig, rounds: int = 5) -> dict[str, float]:
    """Teacher env-steps/s of one batched group against one teacher alone, same envs per teacher.

    Both train in this process with the run's thread count, after one warm-up iteration each. The two
    are timed in alternating rounds (per round: `farm.speedup_iterations` batched iterations, then as
    many lone-teacher iterations as fill the same time) and the ratio is the median over rounds: on
    this shared machine either rate alone drifts 30 % from run to run, which a ratio of two back-to-back
    blocks picked up whole.
    """
    configure_cpu_training(config.threads)
    params = sample_quadrotors(config.farm)
    size = min(config.farm.group_size, params.num_envs)
    trainers = {}
    for label, members in (("batched", list(range(size))), ("one_by_one", [0])):
        env, ppo = _group_ppo(config, params.index(torch.as_tensor(members)), seed=0)
        runner = OnPolicyRunner(
            env, ppo, Path("/nonexistent"), RunnerConfig(max_iterations=0, eval_every=0), progress=False
        )
        trainers[label] = _TimedTrainer(runner)

    rates: dict[str, list[float]] = {"batched": [], "one_by_one": []}
    for _ in range(rounds):
        rate, elapsed = trainers["batched"].run(iterations=config.farm.speedup_iterations)
        rates["batched"].append(rate)
        rates["one_by_one"].append(trainers["one_by_one"].run(seconds=elapsed)[0])
    ratios = [b / o for b, o in zip(rates["batched"], rates["one_by_one"], strict=True)]
    return {
        "batched_teacher_steps_per_s": float(np.median(rates["batched"])),
        "one_by_one_teacher_steps_per_s": float(np.median(rates["one_by_one"])),
        "batched_teachers": float(size),
        "speedup": float(np.median(ratios)),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
    }


def teachers_table(farm: TeacherFarm) -> str:
    """teachers.md: every teacher's quadrotor, how it flew its own quadrotor, and whether it was kept."""
    p = farm.params
    rows = [
        "| teacher | mass [kg] | thrust/weight | success | median RMSE [m] | crashes | tries | kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for q, m in enumerate(farm.metrics):
        rows.append(
            f"| {q} | {p.mass[q].item():.3f} | {p.thrust_to_weight[q].item():.2f} | "
            f"{m['success_rate']:.2f} | {m['position_rmse_median_m']:.4f} | {m['crashes']:.0f} | "
            f"{m['tries']:.0f} | {'yes' if farm.kept[q] else 'no'} |"
        )
    kept = int(farm.kept.sum())
    on_retry = sum(bool(farm.kept[q]) and m["tries"] > 1 for q, m in enumerate(farm.metrics))
    head = f"{kept} of {farm.num_teachers} teachers kept ({on_retry} of them retrained)"
    return head + "\n\n" + "\n".join(rows) + "\n"
