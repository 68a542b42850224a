"""Configuration of a manipulation run (robotrl/recipes/manipulation.py): demos, diffusion BC, ResiP, DSRL.

configs/train/manipulation.yaml maps onto ManipulationConfig; unknown keys are errors. The task name is
the only thing that changes between tasks (`--task`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from robotrl.algos.diffusion_bc import BCConfig
from robotrl.algos.ppo import PPOConfig
from robotrl.algos.sac import SACConfig
from robotrl.config import load_config_file
from robotrl.envs.manipulation.demos import DemoConfig
from robotrl.policies.diffusion import DiffusionConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train" / "manipulation.yaml"


@dataclass
class EnvConfig:
    num_envs: int = 16
    workers: int = 2
    max_episode_steps: int = 200


@dataclass
class ResidualConfig:
    """ResiP (ANCHORS §4): a Gaussian residual over the frozen base, PPO on the sparse success reward."""

    scale: float = 0.1
    """Executed action = base + scale * residual."""
    num_envs: int = 32
    iterations: int = 200
    ppo: PPOConfig = field(default_factory=PPOConfig)
    hidden: tuple[int, ...] = (256, 256)
    init_log_std: float = -1.0
    learn_std: bool = False
    """ResiP keeps the residual's log-std fixed at -1."""
    eval_every: int = 25
    """PPO iterations between success evaluations (0: only at the end)."""


@dataclass
class DSRLConfig:
    """DSRL (ANCHORS §5): SAC whose action is the base policy's initial noise, decoded by DDIM."""

    variant: Literal["sac", "na"] = "sac"
    noise_bound: float = 1.5
    num_envs: int = 8
    total_env_steps: int = 100_000
    sac: SACConfig = field(default_factory=SACConfig)
    eval_every: int = 10_000
    """Env steps between success evaluations."""
    policy: Literal["auto", "stochastic", "deterministic"] = "auto"
    """The noise policy that is reported and exported: SAC's squashed Gaussian as trained, its mean, or
    'auto': the better of the two at the last in-training evaluation (other episodes than the final
    one's). The mean is a low-norm noise vector that a base may never have learnt to denoise (measured:
    zero noise fails every peg insertion and succeeds in every assembly)."""

    def __post_init__(self) -> None:
        if self.variant not in ("sac", "na"):
            raise ValueError(f"dsrl.variant must be 'sac' or 'na', got {self.variant!r}")
        if self.policy not in ("auto", "stochastic", "deterministic"):
            raise ValueError(
                f"dsrl.policy must be 'auto', 'stochastic' or 'deterministic', got {self.policy!r}"
            )


@dataclass
class ManipulationConfig:
    task: str = "peg-insert-side-v3"
    seed: int = 0
    threads: int = 2
    """torch threads of the learner; the env workers use one each."""
    env: EnvConfig = field(default_factory=EnvConfig)
    demos: DemoConfig = field(default_factory=DemoConfig)
    """Its task, env sizes and seed are the run's."""
    labels: Literal["executed", "expert"] = "executed"
    """What behaviour cloning imitates: the noisy executed actions (as human demos jitter) or the expert's
    clean ones."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    resip: ResidualConfig = field(default_factory=ResidualConfig)
    dsrl: DSRLConfig = field(default_factory=DSRLConfig)
    eval_episodes: int = 100
    """Episodes of every final success rate (the same seeded episodes for every policy)."""
    eval_seed: int = 10_000

    def __post_init__(self) -> None:
        if self.labels not in ("executed", "expert"):
            raise ValueError(f"labels must be 'executed' or 'expert', got {self.labels!r}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ManipulationConfig:
    return load_config_file(ManipulationConfig, path or DEFAULT_CONFIG, overrides)


def load_run_config(run_dir: Path) -> ManipulationConfig:
    return load_config_file(ManipulationConfig, run_dir / "config.yaml")
