"""Quadrotor hover/tracking: where the env, PPO, the runner and the bundle export meet.

A run directory holds config.yaml (the resolved config), checkpoints/, tb/ and summary.json, so a
run can be resumed, evaluated and exported from the directory alone.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from robotrl.algos.checkpoints import one_writer
from robotrl.algos.on_policy_runner import OnPolicyRunner, RunnerConfig
from robotrl.algos.ppo import PPO, PPOConfig
from robotrl.config import ConfigError, load_config_file, to_dict
from robotrl.cpu_training import configure_cpu_training
from robotrl.envs.quadrotor.env import QuadrotorEnv, QuadrotorEnvConfig
from robotrl.envs.quadrotor.evaluation import HoverCriterion, TorchController, fly, hover_metrics
from robotrl.envs.quadrotor.observations import ACTION_FIELDS, OBSERVATION_FIELDS
from robotrl.export.bundle import ActionField, Normalization, ObservationField, PolicySpec, RecurrentState
from robotrl.export.export import export_bundle
from robotrl.policies.mlp import ActorCritic

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train" / "quadrotor_hover.yaml"


@dataclass
class PolicyConfig:
    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    init_log_std: float = -2.0
    """Initial exploration std (log). Kept small: noise on a convex thrust curve adds mean thrust, so a
    policy trained with large noise hovers low when flown deterministically (measured: -0.5/-1.0 left a
    0.13-0.2 m offset; -2.0 reached the hover criterion; -2.5 explored too little to stop crashing)."""
    normalize_obs: bool = True
    """Running mean/std on the actor's input; the critic always normalises its privileged input."""
    action_offset: Literal["hover", "zero", "rotor_hover"] = "hover"
    """'hover': the untrained actor outputs the platform's nominal hover command; 'zero': it outputs 0;
    'rotor_hover' (RAPTOR teachers, which read it): the actor adds each rotor's share of a level hover at the
    current mass and rotor efficiencies (teacher_observation), so a payload or a weak rotor needs no feedback
    error to be carried."""
    activation: Literal["tanh", "relu", "elu"] = "tanh"
    """Hidden-layer activation of actor and critic."""

    def __post_init__(self) -> None:
        if self.action_offset not in ("hover", "zero", "rotor_hover"):
            raise ValueError(
                f"action_offset must be 'hover', 'zero' or 'rotor_hover', got {self.action_offset!r}"
            )

    def network_kwargs(self) -> dict[str, Any]:
        """The ActorCritic / GroupedActorCritic arguments this config sets (all but the action offset)."""
        return {
            "actor_hidden": self.actor_hidden,
            "critic_hidden": self.critic_hidden,
            "init_log_std": self.init_log_std,
            "normalize_obs": self.normalize_obs,
            "activation": self.activation,
        }


@dataclass
class EvalConfig:
    episodes: int = 256
    seed: int = 12345
    """Evaluation starts are drawn with this seed, never the training seed."""
    duration_s: float = 10.0


@dataclass
class QuadrotorTrainConfig:
    env: QuadrotorEnvConfig = field(default_factory=QuadrotorEnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    threads: int = 2
    """torch intra-op threads; set it deliberately (an oversubscribed CPU slows training many-fold)."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> QuadrotorTrainConfig:
    return load_config_file(QuadrotorTrainConfig, path or DEFAULT_CONFIG, overrides)


def eval_env_config(config: QuadrotorTrainConfig, platform: str | None = None) -> QuadrotorEnvConfig:
    """The evaluation starts: the training task and ranges, its own seed and episode count, no noise."""
    return dataclasses.replace(
        config.env,
        num_envs=config.eval.episodes,
        seed=config.eval.seed,
        platform=platform or config.env.platform,
        observation_noise=0.0,
    )


def build_policy(config: QuadrotorTrainConfig, env: QuadrotorEnv) -> ActorCritic:
    if config.policy.action_offset == "rotor_hover":
        raise ValueError(
            "policy.action_offset 'rotor_hover' is for RAPTOR teachers (robotrl train raptor), whose "
            "observation carries each rotor's hover action; use 'hover' or 'zero' here"
        )
    offset = None
    if config.policy.action_offset == "hover":
        offset = env.params.hover_action().mean().expand(env.action_dim).clone()
    return ActorCritic(
        env.observation_dim,
        env.privileged_dim,
        env.action_dim,
        action_offset=offset,
        **config.policy.network_kwargs(),
    )


@one_writer
def train(
    config: QuadrotorTrainConfig, run_dir: Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train (or resume) a run; stops at max_iterations or when the hover criterion is met."""
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir, to_dict(config), resume)
    configure_cpu_training(config.threads)
    torch.manual_seed(config.seed)
    env = QuadrotorEnv(dataclasses.replace(config.env, seed=config.seed))
    policy = build_policy(config, env)
    ppo = PPO(policy, config.ppo, env.num_envs, seed=config.seed)
    eval_config = eval_env_config(config)
    criterion = HoverCriterion(episode_s=config.eval.duration_s)

    def evaluate(algo: PPO) -> dict[str, float]:
        return hover_metrics(
            fly(
                TorchController(algo.policy.deterministic_actor()),
                eval_config,
                criterion.episode_s,
                give_up=criterion,
            )
        )

    runner = OnPolicyRunner(env, ppo, run_dir, config.runner, evaluate, progress=progress)
    if resume:
        checkpoint = runner.latest_checkpoint()
        if checkpoint is None:
            raise ConfigError(f"cannot resume: no checkpoint in {runner.checkpoint_dir}")
        runner.load(checkpoint)
    start = time.perf_counter()
    last_eval = runner.learn()
    if not last_eval:
        last_eval = evaluate(ppo)
    summary = runner.summary(last_eval, start)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def prepare_run_dir(run_dir: Path, config: dict[str, Any], resume: bool) -> None:
    """A new run gets an empty directory and its resolved config.yaml; a resumed one must have both, and its
    config.yaml then records the overrides the resumed run was given (e.g. a longer budget)."""
    config_path = run_dir / "config.yaml"
    if resume:
        if not config_path.is_file():
            raise ConfigError(f"cannot resume: {config_path} does not exist (is {run_dir} a run directory?)")
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"run directory {run_dir} is not empty; pass --resume to continue it or pick another"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def load_run(run_dir: str | Path) -> tuple[QuadrotorTrainConfig, ActorCritic]:
    """The resolved config and the policy of a run's latest checkpoint."""
    run_dir = Path(run_dir)
    config = load_config_file(QuadrotorTrainConfig, run_dir / "config.yaml")
    marker = run_dir / "checkpoints" / "latest.txt"
    if not marker.is_file():
        raise ConfigError(f"{run_dir} has no checkpoint yet (no checkpoints/latest.txt); train it first")
    state = torch.load(run_dir / "checkpoints" / marker.read_text().strip(), weights_only=False)
    env = QuadrotorEnv(dataclasses.replace(config.env, num_envs=1))
    policy = build_policy(config, env)
    policy.load_state_dict(state["ppo"]["policy"])
    return config, policy.eval()


def training_safety_limits(env: QuadrotorEnvConfig) -> dict[str, float]:
    """The limits a quadrotor policy was trained under, for its bundle (checked against the robot's)."""
    return {
        "max_position_error_m": env.max_position_error_m,
        "max_linear_velocity_mps": env.max_linear_velocity_mps,
        "max_angular_velocity_radps": env.max_angular_velocity_radps,
        "init_tilt_deg": env.init.tilt_deg,
    }


def quadrotor_policy_spec(
    task: str,
    robot: str,
    control_rate_hz: float,
    safety_limits: dict[str, Any],
    recurrent_state: tuple[RecurrentState, ...] = (),
    normalize_obs: bool = True,
) -> PolicySpec:
    """The bundle contract of every quadrotor policy: RAPTOR's 22 observations in, 4 motor commands out."""
    normalization = (
        Normalization(in_graph=True, method="running mean/std from training, clipped to +-10")
        if normalize_obs
        else Normalization(in_graph=False, method="none: observations enter in their physical units")
    )
    return PolicySpec(
        task=task,
        robot=robot,
        observation_fields=tuple(ObservationField(*f) for f in OBSERVATION_FIELDS),
        normalization=normalization,
        action_fields=tuple(
            ActionField(*f, scaling="linear onto the platform's motor_command_range") for f in ACTION_FIELDS
        ),
        control_rate_hz=control_rate_hz,
        safety_limits=safety_limits,
        recurrent_state=recurrent_state,
    )


def export_run(run_dir: str | Path, out_dir: str | Path, recorded_steps: int = 200) -> Path:
    """Write a policy bundle from a run; parity is checked on observations the policy itself produced."""
    run_dir = Path(run_dir)
    config, policy = load_run(run_dir)
    actor = policy.deterministic_actor()
    recorded = _record_observations(actor, config, recorded_steps)
    summary_path = run_dir / "summary.json"
    metrics = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    env_cfg = config.env
    spec = quadrotor_policy_spec(
        task=f"quadrotor_{env_cfg.target.mode}",
        robot=env_cfg.platform,
        control_rate_hz=1.0 / env_cfg.dt,
        safety_limits=training_safety_limits(env_cfg),
        normalize_obs=config.policy.normalize_obs,
    )
    return export_bundle(
        actor, out_dir, spec, recorded, seed=config.seed, config=to_dict(config), metrics=metrics
    )


@torch.no_grad()
def _record_observations(actor: torch.nn.Module, config: QuadrotorTrainConfig, steps: int) -> torch.Tensor:
    env = QuadrotorEnv(dataclasses.replace(eval_env_config(config), num_envs=4))
    obs = env.reset()
    recorded = [obs]
    for _ in range(steps - 1):
        obs, *_ = env.step(actor(obs))
        recorded.append(obs)
    return torch.cat(recorded)
