"""Configuration of a RAPTOR run (robotrl/recipes/raptor.py): the task, the teacher farm, the student.

configs/train/raptor.yaml maps onto RaptorTrainConfig; unknown keys are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from robotrl.algos.distill import DistillConfig
from robotrl.algos.ppo import PPOConfig
from robotrl.config import load_config_file
from robotrl.envs.quadrotor.env import QuadrotorEnvConfig
from robotrl.recipes.quadrotor import PolicyConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train" / "raptor.yaml"


@dataclass
class FarmConfig:
    num_teachers: int = 64
    """Quadrotors sampled from the RAPTOR distribution, one teacher each."""
    sample_seed: int = 0
    """Seed of the quadrotor sample (RAPTOR: 0); held-out evaluation sets use other seeds."""
    group_size: int = 64
    """Teachers trained together as one batched network; one group is one Ray task."""
    envs_per_teacher: int = 128
    iterations: int = 800
    """PPO iterations of every group."""
    precision_iterations: int = 0
    """PPO iterations after `iterations` with every teacher's action noise fixed at precision_action_std.
    A teacher's mean action is the best one under its exploration noise, which raises the mean thrust
    (motors spin up faster than down, thrust is convex in the command): flown deterministically, the
    teachers of the changes run hovered 0.031 m low (0.003 m with their noise on)."""
    precision_action_std: float = 0.01
    """The fixed action std of the precision iterations (the learnt one ends near 0.05)."""
    eval_episodes: int = 16
    """Random starts each teacher flies on its own quadrotor to decide whether it is kept."""
    eval_duration_s: float = 10.0
    """Length of those flights (the hover criterion's 10 s; shorter only for smoke tests)."""
    keep_success_rate: float = 0.9
    """A teacher is kept when this fraction of its flights meet the hover bound (0.10 m from 3 s on)..."""
    keep_rmse_m: float = 0.10
    """... and its median position RMSE over the last 5 s is at most this [m]."""
    retries: int = 1
    """Rounds that retrain the teachers not kept from a new seed, as one group (0: none)."""
    speedup_iterations: int = 2
    """Batched PPO iterations in each of the 5 timed rounds of the batched-vs-one-by-one throughput ratio
    (the lone teacher fills the same time; 0: skip the measurement)."""
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    """Ray cluster to join with backend 'ray' (None: start a local Ray with `threads` CPUs)."""

    def __post_init__(self) -> None:
        if self.num_teachers < 1 or self.group_size < 1 or self.envs_per_teacher < 1:
            raise ValueError("num_teachers, group_size and envs_per_teacher must be >= 1")
        if self.retries < 0:
            raise ValueError(f"farm.retries must be >= 0, got {self.retries}")
        if self.precision_iterations < 0 or self.precision_action_std <= 0:
            raise ValueError(
                "farm.precision_iterations must be >= 0 and farm.precision_action_std > 0, got "
                f"{self.precision_iterations} and {self.precision_action_std}"
            )
        if self.backend not in ("local", "ray"):
            raise ValueError(f"farm.backend must be 'local' or 'ray', got {self.backend!r}")


@dataclass
class StudentConfig:
    envs_per_teacher: int = 16
    """Envs of each kept teacher's quadrotor in the distillation batch."""
    observation_noise: float = 0.005
    """Std of the noise on the student's observation (the teachers label from clean ones)."""
    learn_initial_state: bool = False
    changes_probability: float | None = None
    """Fraction of the distillation flights with a mid-flight change (env.changes' kinds and ranges); None:
    env.changes.probability, the teachers'. The teachers label through the change from their privileged
    observation. Tried at 0.5 on teachers trained without changes (README), the student learnt the gust
    (0.02 -> 0.24 recovered), not the weak rotor, and hovered the named platforms worse, so it is off. On
    the orientation-1.0 teachers it survives a weak rotor more often but still settles 0.18 m off."""
    least_agile_fraction: float = 0.0
    """This fraction of the kept teachers, those whose quadrotors have the least roll authority
    (QuadrotorParams.roll_authority), fly `least_agile_envs_factor` times `envs_per_teacher` envs: the
    student's hover crashes all sit on such quadrotors (README)."""
    least_agile_envs_factor: int = 1
    most_agile_fraction: float = 0.0
    """The same at the other end, the quadrotors of most roll authority: where the student distilled with
    more envs on the least agile ones swung 0.1-0.5 m around the hover target (README)."""
    most_agile_envs_factor: int = 1
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        p = self.changes_probability
        if p is not None and not 0.0 <= p <= 1.0:
            raise ValueError(f"student.changes_probability must be in [0, 1] or null, got {p}")
        for end in ("least_agile", "most_agile"):
            fraction, factor = getattr(self, f"{end}_fraction"), getattr(self, f"{end}_envs_factor")
            if not 0.0 <= fraction <= 1.0 or factor < 1:
                raise ValueError(
                    f"student.{end}_fraction must be in [0, 1] and student.{end}_envs_factor >= 1, "
                    f"got {fraction} and {factor}"
                )
        if self.least_agile_fraction + self.most_agile_fraction > 1.0:
            raise ValueError(
                "student.least_agile_fraction + student.most_agile_fraction must be <= 1 (the two ends must "
                f"not overlap), got {self.least_agile_fraction} + {self.most_agile_fraction}"
            )


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
    return load_config_file(RaptorTrainConfig, path or DEFAULT_CONFIG, overrides)


def load_run_config(run_dir: Path) -> RaptorTrainConfig:
    return load_config_file(RaptorTrainConfig, run_dir / "config.yaml")
