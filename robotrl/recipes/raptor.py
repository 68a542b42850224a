"""The quadrotor foundation policy (RAPTOR, ANCHORS §1): a teacher farm distilled into one tiny student.

1. Sample quadrotors from the RAPTOR distribution (fixed seed) and train one PPO teacher per quadrotor,
   `farm.group_size` teachers at a time as one batched network (robotrl.policies.grouped_mlp); with
   `--backend ray` the groups are Ray tasks. A group is trained from its own seed only, so the local
   and the Ray backend give the same teachers.
2. Keep the teachers that hover their own quadrotor (success and RMSE thresholds); report the rest.
3. Distil the kept teachers into the 2084-parameter recurrent student: behaviour cloning from teacher
   rollouts, then DAgger (the student flies, each env's own teacher labels), observation noise for the
   student only.
4. Export the student as a bundle whose GRU state is an explicit ONNX input/output.

A run directory holds config.yaml, teachers/group_XXX/ (PPO checkpoints and TensorBoard), teachers.pt
(every teacher, its quadrotor and whether it was kept), teachers.md, student/ (checkpoints, TensorBoard),
bundle/ and summary.json. Every stage resumes from what is already on disk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from robotrl.algos.distill import DAgger, DistillConfig
from robotrl.algos.on_policy_runner import OnPolicyRunner, RunnerConfig
from robotrl.algos.ppo import PPO, PPOConfig
from robotrl.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from robotrl.envs.quadrotor.env import QuadrotorEnv, QuadrotorEnvConfig
from robotrl.envs.quadrotor.evaluation import Controller, FlightLog, HoverCriterion, fly, hover_metrics
from robotrl.envs.quadrotor.params import QuadrotorParams
from robotrl.envs.quadrotor.platforms import RaptorDistribution
from robotrl.export.bundle import RecurrentState
from robotrl.export.export import export_bundle
from robotrl.policies.grouped_mlp import GroupedActorCritic
from robotrl.policies.recurrent_student import RecurrentStudent
from robotrl.recipes.quadrotor import PolicyConfig, quadrotor_policy_spec

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train" / "raptor.yaml"
TEACHERS_FILE = "teachers.pt"


@dataclass
class FarmConfig:
    num_teachers: int = 64
    """Quadrotors sampled from the RAPTOR distribution, one teacher each."""
    sample_seed: int = 0
    """Seed of the quadrotor sample (RAPTOR: 0); held-out evaluation sets use other seeds."""
    group_size: int = 64
    """Teachers trained together as one batched network; one group is one Ray task."""
    envs_per_teacher: int = 128
    iterations: int = 400
    """PPO iterations of every group."""
    eval_episodes: int = 16
    """Random starts each teacher flies on its own quadrotor to decide whether it is kept."""
    eval_duration_s: float = 10.0
    """Length of those flights (the hover criterion's 10 s; shorter only for smoke tests)."""
    keep_success_rate: float = 0.9
    """A teacher is kept when this fraction of its flights meet the hover bound (0.10 m from 3 s on)..."""
    keep_rmse_m: float = 0.10
    """... and its median position RMSE over the last 5 s is at most this [m]."""
    speedup_iterations: int = 4
    """PPO iterations timed for the batched-vs-one-by-one throughput ratio (0: skip the measurement)."""
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    """Ray cluster to join with backend 'ray' (None: start a local Ray with `threads` CPUs)."""

    def __post_init__(self) -> None:
        if self.num_teachers < 1 or self.group_size < 1 or self.envs_per_teacher < 1:
            raise ValueError("num_teachers, group_size and envs_per_teacher must be >= 1")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"farm.backend must be 'local' or 'ray', got {self.backend!r}")


@dataclass
class StudentConfig:
    envs_per_teacher: int = 16
    """Envs of each kept teacher's quadrotor in the distillation batch."""
    observation_noise: float = 0.005
    """Std of the noise on the student's observation (the teachers label from clean ones)."""
    learn_initial_state: bool = False
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class RaptorTrainConfig:
    env: QuadrotorEnvConfig = field(default_factory=lambda: QuadrotorEnvConfig(platform="raptor"))
    """The task of teachers and student; num_envs and platform are set by the farm."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    farm: FarmConfig = field(default_factory=FarmConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    seed: int = 0
    threads: int = 2
    """torch intra-op threads of each group's training (with Ray: CPUs per task)."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RaptorTrainConfig:
    data = load_yaml(path or DEFAULT_CONFIG)
    data = apply_overrides(data, overrides or [], RaptorTrainConfig)
    return from_dict(RaptorTrainConfig, data, str(path or DEFAULT_CONFIG))


def sample_quadrotors(farm: FarmConfig) -> QuadrotorParams:
    return RaptorDistribution().sample(farm.num_teachers, torch.Generator().manual_seed(farm.sample_seed))


def group_members(farm: FarmConfig) -> list[list[int]]:
    """Teacher indices of each group, in order: the partition is the config's, never the backend's."""
    ids = list(range(farm.num_teachers))
    return [ids[i : i + farm.group_size] for i in range(0, len(ids), farm.group_size)]


def _group_env_config(
    config: RaptorTrainConfig, members: int, envs_per_member: int, seed: int
) -> QuadrotorEnvConfig:
    return dataclasses.replace(config.env, num_envs=members * envs_per_member, platform="raptor", seed=seed)


def build_group(config: RaptorTrainConfig, params: QuadrotorParams) -> GroupedActorCritic:
    """Untrained teachers for the quadrotors `params` (one row each), each offset to its hover command."""
    offset = None
    if config.policy.action_offset == "hover":
        offset = params.hover_action().unsqueeze(-1).expand(params.num_envs, 4).clone()
    return GroupedActorCritic(
        params.num_envs,
        QuadrotorEnv.observation_dim,
        QuadrotorEnv.privileged_dim,
        QuadrotorEnv.action_dim,
        actor_hidden=config.policy.actor_hidden,
        critic_hidden=config.policy.critic_hidden,
        init_log_std=config.policy.init_log_std,
        action_offset=offset,
        normalize_obs=config.policy.normalize_obs,
        activation=config.policy.activation,
    )


def _group_ppo(config: RaptorTrainConfig, params: QuadrotorParams, seed: int) -> tuple[QuadrotorEnv, PPO]:
    e = config.farm.envs_per_teacher
    torch.manual_seed(seed)
    env_params = params.index(torch.arange(params.num_envs).repeat_interleave(e))
    env = QuadrotorEnv(_group_env_config(config, params.num_envs, e, seed), params=env_params)
    return env, PPO(build_group(config, params), config.ppo, env.num_envs, seed=seed)


def train_group(
    config: RaptorTrainConfig, group: int, run_dir: Path, progress: bool = True
) -> dict[str, Any]:
    """Train (or resume) one group of teachers; returns its final policy state and training stats."""
    torch.set_num_threads(config.threads)
    members = group_members(config.farm)[group]
    params = sample_quadrotors(config.farm).index(torch.as_tensor(members))
    seed = config.seed * 1000 + group
    env, ppo = _group_ppo(config, params, seed)
    runner_config = RunnerConfig(
        max_iterations=config.farm.iterations, checkpoint_every=50, eval_every=0, stop_at_criterion=False
    )
    runner = OnPolicyRunner(
        env, ppo, run_dir / "teachers" / f"group_{group:03d}", runner_config, progress=progress
    )
    checkpoint = runner.latest_checkpoint()
    if checkpoint is not None:
        runner.load(checkpoint)
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
    if config.farm.backend == "ray" and todo:
        results = _train_groups_on_ray(config, run_dir, todo)
    else:
        results = {g: train_group(config, g, run_dir, progress) for g in todo}
    for g, result in results.items():
        torch.save(result, done_path(g))
    return [torch.load(done_path(g), weights_only=False) for g in groups]


def _train_groups_on_ray(
    config: RaptorTrainConfig, run_dir: Path, todo: list[int]
) -> dict[int, dict[str, Any]]:
    """One Ray task a group (about 1 ms of overhead a task: never finer than a group)."""
    import os

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if config.farm.ray_address:
        ray.init(address=config.farm.ray_address)
    else:
        ray.init(address="local", num_cpus=config.threads, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=config.threads)(train_group)
        futures = {g: task.remote(config, g, run_dir, False) for g in todo}
        return {g: ray.get(f) for g, f in futures.items()}
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
    metrics: list[dict[str, float]] = field(default_factory=list)
    """Per teacher: success_rate, position_rmse_median_m, crashes on its own quadrotor."""

    @property
    def num_teachers(self) -> int:
        return self.params.num_envs

    def actor(self, teachers: list[int], per_teacher: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Deterministic actions of `teachers` for observations [len(teachers) * per_teacher, 22],
        rows teacher-major in the order given."""
        where = {t: (g, i) for g, ids in enumerate(self.members) for i, t in enumerate(ids)}
        # Consecutive teachers of one group run as one batched call.
        runs: list[tuple[GroupedActorCritic, list[int]]] = []
        for t in teachers:
            g, i = where[t]
            if runs and runs[-1][0] is self.groups[g]:
                runs[-1][1].append(i)
            else:
                runs.append((self.groups[g], [i]))
        selected = [(group.select(ids).eval(), len(ids) * per_teacher) for group, ids in runs]

        @torch.no_grad()
        def act(obs: torch.Tensor) -> torch.Tensor:
            outs, start = [], 0
            for module, rows in selected:
                outs.append(module.action_mean(obs[start : start + rows]).clamp(-1.0, 1.0))
                start += rows
            return torch.cat(outs)

        return act

    def controller(self, episodes_per_quadrotor: int) -> FarmController:
        """All teachers as one Controller (robotrl.envs.quadrotor.evaluation): row q*K+k flies quadrotor q."""
        return FarmController(self.actor(list(range(self.num_teachers)), episodes_per_quadrotor))


class FarmController:
    """The Controller protocol over a teacher-major batch of teacher actors."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor]):
        self._act = act

    def reset(self, batch_size: int) -> None:
        del batch_size

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self._act(torch.as_tensor(obs, dtype=torch.float32)).numpy()


def _subset(log: FlightLog, episodes: slice) -> FlightLog:
    return FlightLog(
        log.dt, log.position_w[:, episodes], log.target_position_w[:, episodes], log.actions[:, episodes],
        log.crashed_at[episodes],
    )  # fmt: skip


def evaluate_per_quadrotor(
    config: RaptorTrainConfig, params: QuadrotorParams, controller: Controller
) -> list[dict[str, float]]:
    """Hover metrics per quadrotor, each from `farm.eval_episodes` seeded random starts.

    The controller's rows are quadrotor-major: row q*K+k flies quadrotor q.
    """
    k = config.farm.eval_episodes
    env_config = dataclasses.replace(
        _group_env_config(config, params.num_envs, k, seed=12345), observation_noise=0.0
    )
    criterion = HoverCriterion(episode_s=config.farm.eval_duration_s)
    flights = fly(
        controller,
        env_config,
        criterion.episode_s,
        params=params.index(torch.arange(params.num_envs).repeat_interleave(k)),
    )
    return [
        hover_metrics(_subset(flights, slice(q * k, (q + 1) * k)), criterion) for q in range(params.num_envs)
    ]


def assemble_farm(config: RaptorTrainConfig, results: list[dict[str, Any]]) -> TeacherFarm:
    params = sample_quadrotors(config.farm)
    groups, members = [], []
    for result in results:
        ids = result["members"]
        group = build_group(config, params.index(torch.as_tensor(ids)))
        group.load_state_dict(result["policy"])
        groups.append(group.eval())
        members.append(ids)
    farm = TeacherFarm(params, torch.zeros(params.num_envs, dtype=torch.bool), groups, members)
    farm.metrics = evaluate_per_quadrotor(config, params, farm.controller(config.farm.eval_episodes))
    farm.kept = torch.tensor(
        [
            m["success_rate"] >= config.farm.keep_success_rate
            and m["position_rmse_median_m"] <= config.farm.keep_rmse_m
            for m in farm.metrics
        ]
    )
    return farm


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
    groups = []
    for ids, group_state in zip(state["members"], state["groups"], strict=True):
        group = build_group(config, params.index(torch.as_tensor(ids)))
        group.load_state_dict(group_state)
        groups.append(group.eval())
    return TeacherFarm(params, state["kept"], groups, state["members"], state["metrics"])


def load_run_config(run_dir: Path) -> RaptorTrainConfig:
    return from_dict(RaptorTrainConfig, load_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml"))


# ------------------------------------------------------------------------------------------ speed
def measure_farm_speedup(config: RaptorTrainConfig) -> dict[str, float]:
    """Teacher env-steps/s of one batched group against one teacher alone, same envs per teacher.

    Both run `farm.speedup_iterations` PPO iterations (rollout and update) after one warm-up iteration,
    in this process with the run's thread count.
    """
    torch.set_num_threads(config.threads)
    params = sample_quadrotors(config.farm)
    size = min(config.farm.group_size, params.num_envs)
    rates = {}
    for label, members in (("batched", list(range(size))), ("one_by_one", [0])):
        env, ppo = _group_ppo(config, params.index(torch.as_tensor(members)), seed=0)
        runner = OnPolicyRunner(
            env, ppo, Path("/nonexistent"), RunnerConfig(max_iterations=0, eval_every=0), progress=False
        )
        obs, privileged = env.reset(), env.privileged_observation()
        for i in range(config.farm.speedup_iterations + 1):
            if i == 1:
                start = time.perf_counter()
            obs, privileged, _ = runner.iterate(obs, privileged)
        elapsed = time.perf_counter() - start
        rates[label] = config.farm.speedup_iterations * ppo.config.num_steps * env.num_envs / elapsed
    return {
        "batched_teacher_steps_per_s": rates["batched"],
        "one_by_one_teacher_steps_per_s": rates["one_by_one"],
        "batched_teachers": float(size),
        "speedup": rates["batched"] / rates["one_by_one"],
    }


# ------------------------------------------------------------------------------------------ student
def student_env(config: RaptorTrainConfig, farm: TeacherFarm, teachers: list[int]) -> QuadrotorEnv:
    """The kept teachers' quadrotors, `student.envs_per_teacher` envs each, teacher-major."""
    k = config.student.envs_per_teacher
    env_config = dataclasses.replace(
        _group_env_config(config, len(teachers), k, seed=config.seed + 1),
        observation_noise=config.student.observation_noise,
    )
    rows = torch.as_tensor(teachers).repeat_interleave(k)
    return QuadrotorEnv(env_config, params=farm.params.index(rows))


def distill_student(
    config: RaptorTrainConfig, farm: TeacherFarm, run_dir: Path, progress: bool = True
) -> tuple[RecurrentStudent, list[dict[str, float]]]:
    """BC then DAgger into the 2084-parameter student, with checkpoints, TensorBoard and a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from torch.utils.tensorboard import SummaryWriter

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    teachers = farm.kept.nonzero().squeeze(-1).tolist()
    if not teachers:
        raise RuntimeError(
            "no teacher met the keep thresholds (farm.keep_success_rate, farm.keep_rmse_m); "
            f"see {run_dir / 'teachers.md'} and train the farm longer (farm.iterations)"
        )
    env = student_env(config, farm, teachers)
    act = farm.actor(teachers, config.student.envs_per_teacher)
    obs_dim = QuadrotorEnv.observation_dim
    student = RecurrentStudent(learn_initial_state=config.student.learn_initial_state)
    dagger = DAgger(
        student, lambda privileged: act(privileged[:, :obs_dim]), config.student.distill, config.seed
    )
    out = run_dir / "student"
    checkpoint = out / "checkpoint.pt"
    history: list[dict[str, float]] = []
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        dagger.load_state_dict(state["dagger"])
        history = state["history"]
    cfg = config.student.distill
    writer = SummaryWriter(str(out / "tb"), purge_step=dagger.rollouts or None)
    columns = (TextColumn("distil"), BarColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("distil", total=cfg.total_rollouts, completed=dagger.rollouts, status="")
        while dagger.rollouts < cfg.total_rollouts:
            start = time.perf_counter()
            metrics = dagger.collect(env, teacher_drives=dagger.rollouts < cfg.bc_rollouts)
            metrics.update(dagger.update())
            metrics["perf/wall_s"] = time.perf_counter() - start
            history.append({"rollout": float(dagger.rollouts), **metrics})
            for key, value in metrics.items():
                writer.add_scalar(key, value, dagger.rollouts)
            status = (
                f"mse {metrics['loss/distill_mse']:.4f}  survival {metrics['distill/driver_survival']:.2f}"
                f"  ({'teacher' if metrics['distill/teacher_drives'] else 'student'} drives)"
            )
            bar.update(task, completed=dagger.rollouts, status=status)
            out.mkdir(parents=True, exist_ok=True)
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"dagger": dagger.state_dict(), "history": history}, tmp)
            tmp.replace(checkpoint)
    writer.close()
    return student.eval(), history


def export_student(
    config: RaptorTrainConfig, student: RecurrentStudent, out_dir: Path, metrics: dict[str, Any]
) -> Path:
    """The student as a bundle: the GRU state is the graph's `hidden` input / `hidden_next` output."""
    env_cfg = config.env
    state = RecurrentState(
        "hidden",
        "hidden_next",
        (1, "batch", student.hidden_size),
        tuple(student.initial_state.flatten().tolist()),
    )
    spec = quadrotor_policy_spec(
        task="quadrotor_raptor",
        robot="raptor",
        control_rate_hz=1.0 / env_cfg.dt,
        safety_limits={
            "max_position_error_m": env_cfg.max_position_error_m,
            "max_linear_velocity_mps": env_cfg.max_linear_velocity_mps,
            "max_angular_velocity_radps": env_cfg.max_angular_velocity_radps,
            "init_tilt_deg": env_cfg.init.tilt_deg,
        },
        recurrent_state=(state,),
        normalize_obs=False,
    )
    recorded = _record_student_observations(config, student)
    return export_bundle(
        student, out_dir, spec, recorded, seed=config.seed, config=to_dict(config), metrics=metrics
    )


@torch.no_grad()
def _record_student_observations(
    config: RaptorTrainConfig, student: RecurrentStudent, steps: int = 300
) -> torch.Tensor:
    """Observations of the student flying the sample's first quadrotors, for the export's parity check."""
    n = min(4, config.farm.num_teachers)
    env_config = dataclasses.replace(_group_env_config(config, n, 1, seed=4321), observation_noise=0.0)
    env = QuadrotorEnv(env_config, params=sample_quadrotors(config.farm).index(torch.arange(n)))
    obs, hidden = env.reset(), student.initial(env.num_envs)
    recorded = [obs]
    for _ in range(steps - 1):
        action, hidden = student(obs, hidden)
        obs, *_ = env.step(action)
        recorded.append(obs)
    return torch.cat(recorded)


# ------------------------------------------------------------------------------------------ the run
def teachers_table(farm: TeacherFarm) -> str:
    """teachers.md: every teacher's quadrotor, how it flew its own quadrotor, and whether it was kept."""
    p = farm.params
    rows = [
        "| teacher | mass [kg] | thrust/weight | success | median RMSE [m] | crashes | kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for q, m in enumerate(farm.metrics):
        rows.append(
            f"| {q} | {p.mass[q].item():.3f} | {p.thrust_to_weight[q].item():.2f} | "
            f"{m['success_rate']:.2f} | "
            f"{m['position_rmse_median_m']:.4f} | {m['crashes']:.0f} | {'yes' if farm.kept[q] else 'no'} |"
        )
    kept = int(farm.kept.sum())
    return f"{kept} of {farm.num_teachers} teachers kept\n\n" + "\n".join(rows) + "\n"


def train(
    config: RaptorTrainConfig, run_dir: Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Teachers, selection, student, bundle; each stage resumes from what the run directory holds."""
    from robotrl.recipes.quadrotor import prepare_run_dir

    run_dir = Path(run_dir)
    prepare_run_dir(run_dir, to_dict(config), resume)
    stages_path = run_dir / "stages.json"
    stages: dict[str, Any] = json.loads(stages_path.read_text()) if stages_path.is_file() else {}

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = fn()
        stages[f"{name}_wall_s"] = stages.get(f"{name}_wall_s", 0.0) + time.perf_counter() - start
        stages_path.write_text(json.dumps(stages, indent=2))
        return value

    if "speedup" not in stages and config.farm.speedup_iterations > 0:
        stages["speedup"] = stage("speedup", lambda: measure_farm_speedup(config))
        log.info(
            "batched farm: %.1fx the teacher env-steps/s of one teacher alone", stages["speedup"]["speedup"]
        )
    if (run_dir / TEACHERS_FILE).is_file():
        farm = load_teacher_farm(run_dir)
    else:
        results = stage("teachers", lambda: train_farm(config, run_dir, progress))
        farm = stage("teacher_selection", lambda: assemble_farm(config, results))
        save_farm(farm, run_dir / TEACHERS_FILE)
        (run_dir / "teachers.md").write_text(teachers_table(farm))
    student, history = stage("student", lambda: distill_student(config, farm, run_dir, progress))
    kept = farm.kept.nonzero().squeeze(-1).tolist()
    comparison = stage("student_check", lambda: _student_vs_teachers(config, farm, student, kept))
    summary = {
        "teachers_trained": farm.num_teachers,
        "teachers_kept": len(kept),
        "teachers_kept_ids": kept,
        **stages,
        "total_wall_s": sum(v for k, v in stages.items() if k.endswith("_wall_s")),
        "student_parameters": student.parameter_count(),
        "distill_last": history[-1] if history else {},
        "student_vs_teachers": comparison,
    }
    bundle_dir = run_dir / "bundle"
    if not (bundle_dir / "policy.yaml").is_file():
        export_student(
            config, student, bundle_dir, {k: v for k, v in summary.items() if k != "teachers_kept_ids"}
        )
    summary["bundle"] = str(bundle_dir)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _student_vs_teachers(
    config: RaptorTrainConfig, farm: TeacherFarm, student: RecurrentStudent, kept: list[int]
) -> dict[str, float]:
    """Success and median hover RMSE of the student and of the teachers on the kept teachers' quadrotors
    (the same seeded starts as the teachers' selection flights)."""
    student_metrics = evaluate_per_quadrotor(
        config, farm.params.index(torch.as_tensor(kept)), StudentController(student)
    )
    teacher_metrics = [farm.metrics[q] for q in kept]
    out = {}
    for who, ms in (("student", student_metrics), ("teachers", teacher_metrics)):
        out[f"{who}_success_rate"] = float(np.mean([m["success_rate"] for m in ms]))
        out[f"{who}_rmse_median_m"] = float(np.nanmedian([m["position_rmse_median_m"] for m in ms]))
    return out


class StudentController:
    """The torch student as a Controller, carrying its hidden state between calls."""

    def __init__(self, student: RecurrentStudent):
        self.student = student.eval()
        self.hidden = student.initial(1)

    def reset(self, batch_size: int) -> None:
        self.hidden = self.student.initial(batch_size)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        action, self.hidden = self.student(torch.as_tensor(obs, dtype=torch.float32), self.hidden)
        return action.numpy()
