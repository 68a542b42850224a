"""The quadrotor foundation policy (RAPTOR, ANCHORS §1): a teacher farm distilled into one tiny student.

1. Sample quadrotors from the RAPTOR distribution (fixed seed) and train one PPO teacher per quadrotor
   (robotrl.recipes.raptor_farm), a group at a time as one batched network, here or on Ray.
2. Keep the teachers that hover their own quadrotor (success and RMSE thresholds); report the rest.
3. Distil the kept teachers into the 2084-parameter recurrent student: behaviour cloning from teacher
   rollouts, then DAgger (the student flies, each env's own teacher labels), observation noise for the
   student only.
4. Export the student as a bundle whose GRU state is an explicit ONNX input/output.

A run directory holds config.yaml, teachers/group_XXX/ (PPO checkpoints and TensorBoard), teachers.pt
(every teacher, its quadrotor and whether it was kept), teachers.md, student/ (checkpoint, TensorBoard),
bundle/, stages.json (wall-clock per stage) and summary.json. Every stage resumes from what is on disk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.algos.checkpoints import one_writer
from robotrl.algos.distill import DAgger
from robotrl.config import to_dict
from robotrl.cpu_training import configure_cpu_training
from robotrl.envs.quadrotor.env import QuadrotorEnv, teacher_observation
from robotrl.export.bundle import RecurrentState
from robotrl.export.export import export_bundle
from robotrl.policies.recurrent_student import RecurrentStudent
from robotrl.recipes.quadrotor import prepare_run_dir, quadrotor_policy_spec, training_safety_limits
from robotrl.recipes.raptor_config import RaptorTrainConfig, load_config
from robotrl.recipes.raptor_farm import (
    TEACHERS_FILE,
    TeacherFarm,
    assemble_farm,
    evaluate_per_quadrotor,
    group_env_config,
    load_teacher_farm,
    measure_farm_speedup,
    retry_teachers,
    sample_quadrotors,
    save_farm,
    teachers_table,
    train_farm,
)

__all__ = ["load_config", "load_teacher_farm", "train"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ student
def student_env(config: RaptorTrainConfig, farm: TeacherFarm, teachers: list[int]) -> QuadrotorEnv:
    """The kept teachers' quadrotors, `student.envs_per_teacher` envs each, teacher-major."""
    k, p = config.student.envs_per_teacher, config.student.changes_probability
    changes = config.env.changes if p is None else dataclasses.replace(config.env.changes, probability=p)
    env_config = dataclasses.replace(
        group_env_config(config, len(teachers), k, seed=config.seed + 1),
        observation_noise=config.student.observation_noise,
        changes=changes,
    )
    return QuadrotorEnv(env_config, params=farm.params.index(torch.as_tensor(teachers)).repeat_each(k))


def distillation_teachers(config: RaptorTrainConfig, farm: TeacherFarm) -> list[int]:
    """The kept teachers in order, each of the least agile `student.least_agile_envs_factor` times and each
    of the most agile `student.most_agile_envs_factor` times, so student_env and farm.actor give their
    quadrotors that many times the envs. The ends never overlap: the most agile are taken from the rest."""
    kept = farm.kept.nonzero().squeeze(-1).tolist()
    cfg = config.student
    authority = farm.params.roll_authority
    by_authority = sorted(kept, key=lambda t: float(authority[t]))
    least_agile = by_authority[: round(cfg.least_agile_fraction * len(kept))]
    rest = by_authority[len(least_agile) :]
    most_agile = rest[max(len(rest) - round(cfg.most_agile_fraction * len(kept)), 0) :]
    return sorted(
        kept + least_agile * (cfg.least_agile_envs_factor - 1) + most_agile * (cfg.most_agile_envs_factor - 1)
    )


def distill_student(
    config: RaptorTrainConfig, farm: TeacherFarm, run_dir: Path, progress: bool = True
) -> tuple[RecurrentStudent, list[dict[str, float]]]:
    """BC then DAgger into the 2084-parameter student, with checkpoints, TensorBoard and a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from torch.utils.tensorboard import SummaryWriter

    configure_cpu_training(config.threads)
    torch.manual_seed(config.seed)
    teachers = distillation_teachers(config, farm)
    if not teachers:
        raise RuntimeError(
            "no teacher met the keep thresholds (farm.keep_success_rate, farm.keep_rmse_m); "
            f"see {run_dir / 'teachers.md'} and train the farm longer (farm.iterations)"
        )
    env = student_env(config, farm, teachers)
    act = farm.actor(teachers, config.student.envs_per_teacher)
    student = RecurrentStudent(learn_initial_state=config.student.learn_initial_state)
    dagger = DAgger(
        student, lambda privileged: act(teacher_observation(privileged)), config.student.distill, config.seed
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
            if not progress and dagger.rollouts % max(1, cfg.total_rollouts // 10) == 0:
                log.info("distillation rollout %d of %d: %s", dagger.rollouts, cfg.total_rollouts, status)
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
        safety_limits=training_safety_limits(env_cfg),
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
    env_config = dataclasses.replace(group_env_config(config, n, 1, seed=4321), observation_noise=0.0)
    env = QuadrotorEnv(env_config, params=sample_quadrotors(config.farm).index(torch.arange(n)))
    obs, hidden = env.reset(), student.initial(env.num_envs)
    recorded = [obs]
    for _ in range(steps - 1):
        action, hidden = student(obs, hidden)
        obs, *_ = env.step(action)
        recorded.append(obs)
    return torch.cat(recorded)


# ------------------------------------------------------------------------------------------ the run
@one_writer
def train(
    config: RaptorTrainConfig, run_dir: Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Teachers, selection, student, bundle; each stage resumes from what the run directory holds."""
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir, to_dict(config), resume)
    stages_path = run_dir / "stages.json"
    stages: dict[str, Any] = json.loads(stages_path.read_text()) if stages_path.is_file() else {}

    def stage(name: str, fn: Callable[[], Any], result: str | None = None) -> Any:
        """Run `fn`, adding its wall time to stages.json, and its value as `result` if given."""
        start = time.perf_counter()
        try:
            value = fn()
            if result is not None:
                stages[result] = value
            return value
        finally:  # an interrupted stage keeps the time it ran: a resumed run adds the rest
            stages[f"{name}_wall_s"] = stages.get(f"{name}_wall_s", 0.0) + time.perf_counter() - start
            stages_path.write_text(json.dumps(stages, indent=2))

    if "speedup" not in stages and config.farm.speedup_iterations > 0:
        stage("speedup", lambda: measure_farm_speedup(config), result="speedup")
        log.info(
            "batched farm: %.1fx the teacher env-steps/s of one teacher alone", stages["speedup"]["speedup"]
        )
    if (run_dir / TEACHERS_FILE).is_file():
        farm = load_teacher_farm(run_dir)
    else:
        results = stage("teachers", lambda: train_farm(config, run_dir, progress))
        farm = stage("teacher_selection", lambda: assemble_farm(config, results))
        stage(
            "teacher_retries",
            lambda: retry_teachers(config, farm, run_dir, progress),
            result="teachers_retrained",
        )
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
        rmse = np.array([m["position_rmse_median_m"] for m in ms])
        flown = rmse[np.isfinite(rmse)]  # NaN: every episode on that quadrotor crashed
        out[f"{who}_rmse_median_m"] = float(np.median(flown)) if flown.size else float("nan")
    return out


class StudentController:
    """The torch student as a Controller, carrying its hidden state between calls."""

    observation = "raptor"

    def __init__(self, student: RecurrentStudent):
        self.student = student.eval()
        self.hidden = student.initial(1)

    def reset(self, batch_size: int) -> None:
        self.hidden = self.student.initial(batch_size)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        action, self.hidden = self.student(torch.as_tensor(obs, dtype=torch.float32), self.hidden)
        return action.numpy()
