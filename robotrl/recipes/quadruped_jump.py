"""Quadruped jumping, staged: in-place jumps first, then the forward curriculum from that policy.

A run directory holds config.yaml and one sub-directory per stage (checkpoints/, tb/, summary.json).
A stage with a summary.json is done; the next one starts from its final weights, as the reference-free
curriculum trains stage 2 from stage 1 (ANCHORS §3). `--resume` continues the unfinished stage. The
stages: upward (in place), forward (forward and, with the level, diagonal landings), obstacle.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robotrl.algos.checkpoints import latest_checkpoint, one_writer
from robotrl.algos.on_policy_runner import OnPolicyRunner, RunnerConfig
from robotrl.algos.ppo import PPO, PPOConfig
from robotrl.config import ConfigError, load_config_file, load_yaml, to_dict
from robotrl.control.legged import ema_alpha
from robotrl.cpu_training import configure_cpu_training
from robotrl.envs.quadruped.curriculum import STAGES
from robotrl.envs.quadruped.evaluation import jump_metrics
from robotrl.envs.quadruped.jump_env import (
    ACTION_FIELDS,
    OBSERVATION_FIELDS,
    QuadrupedJumpEnv,
    QuadrupedJumpEnvConfig,
    TerminationConfig,
)
from robotrl.export.bundle import (
    MANIFEST_FILE,
    TORCHSCRIPT_FILE,
    ActionField,
    BundleSpec,
    Normalization,
    ObservationField,
    PolicySpec,
    read_bundle,
)
from robotrl.export.export import export_bundle
from robotrl.policies.mlp import ActorCritic
from robotrl.recipes.quadrotor import PolicyConfig, prepare_run_dir

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train" / "quadruped_jump.yaml"


@dataclass
class StageConfig:
    max_iterations: int = 1000
    eval_landing_m: tuple[float, float] = (0.0, 0.0)
    """(forward, lateral) landing of the in-training evaluation [m]."""
    criterion_success: float = 0.8
    """The stage's evaluation criterion: upward_criterion_rate (upward) or success_rate (forward)."""
    stop_at_criterion: bool = True
    init_from_bundle: str | None = None
    """A jump bundle whose actor and observation normaliser this stage starts from, instead of the
    previous stage's weights (e.g. the obstacle stage from a committed forward bundle); the critic,
    which a bundle does not carry, starts fresh."""
    critic_warmup_iterations: int = 0
    """With init_from_bundle: iterations in which only the fresh critic learns, the actor held."""
    start_action_std: float | None = None
    """The action std a stage begins with (None: the previous stage's, or policy.init_log_std's for a
    bundle). The forward stage ends near 0.8, and its sampled 0.6-0.8 m jumps succeed in 10-14% of the
    training episodes (measured): a curriculum that levels up on one success and down on two failures
    cannot climb below about 50%, so a stage after it may start with less exploration."""

    def __post_init__(self) -> None:
        if self.critic_warmup_iterations < 0:
            raise ValueError(f"critic_warmup_iterations must be >= 0, got {self.critic_warmup_iterations}")
        if self.start_action_std is not None and self.start_action_std <= 0:
            raise ValueError(f"start_action_std must be > 0, got {self.start_action_std}")


@dataclass
class JumpEvalConfig:
    episodes: int = 128
    seed: int = 12345
    every: int = 25
    """Iterations between in-training evaluations."""
    forward_distances_m: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    """Forward landings of the final report."""
    init_joint_noise_rad: float = 0.05
    """Start-pose joint offsets of the evaluation episodes, so that they differ (QuadrupedJumpEnvConfig)."""
    obstacle_height_m: float = 0.2
    """Box height of the obstacle stage's evaluation jumps (its levels span 0-0.3 m) [m]."""


@dataclass
class QuadrupedJumpTrainConfig:
    env: QuadrupedJumpEnvConfig = field(default_factory=QuadrupedJumpEnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    stages: tuple[str, ...] = ("upward", "forward")
    """Curriculum stages trained in order, each from the previous one's weights."""
    upward: StageConfig = field(default_factory=StageConfig)
    forward: StageConfig = field(
        default_factory=lambda: StageConfig(eval_landing_m=(0.5, 0.0), criterion_success=0.7)
    )
    obstacle: StageConfig = field(
        default_factory=lambda: StageConfig(
            eval_landing_m=(0.8, 0.0), criterion_success=0.7, stop_at_criterion=False
        )
    )
    """Jumps over a box between start and landing (its evaluation: over a box eval.obstacle_height_m high)."""
    checkpoint_every: int = 50
    eval: JumpEvalConfig = field(default_factory=JumpEvalConfig)
    seed: int = 0
    threads: int = 2
    """torch intra-op threads; the MuJoCo rollout threads are env.num_threads."""

    def __post_init__(self) -> None:
        if not self.stages or len(set(self.stages)) != len(self.stages) or set(self.stages) - set(STAGES):
            raise ValueError(f"stages must be distinct names out of {list(STAGES)}, got {self.stages}")

    def stage(self, name: str) -> StageConfig:
        return getattr(self, name)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> QuadrupedJumpTrainConfig:
    return load_config_file(QuadrupedJumpTrainConfig, path or DEFAULT_CONFIG, overrides)


def stage_env_config(config: QuadrupedJumpTrainConfig, name: str) -> QuadrupedJumpEnvConfig:
    env = config.env
    return dataclasses.replace(
        env, seed=config.seed, curriculum=dataclasses.replace(env.curriculum, stage=name)
    )


def eval_env_config(
    config: QuadrupedJumpTrainConfig,
    landing_m: tuple[float, float],
    stage: str | None = None,
    obstacle_height_m: float | None = None,
) -> QuadrupedJumpEnvConfig:
    """One landing for every robot, the evaluation seed, no domain randomisation; the stage decides
    whether there are boxes (default: upward for a landing at the start, else forward), all of them
    obstacle_height_m high (default eval.obstacle_height_m). Success is scored on ANCHORS' checks
    (TerminationConfig's defaults) whatever margins the training used (env.termination)."""
    env = config.env
    stage = stage or ("upward" if tuple(landing_m) == (0.0, 0.0) else "forward")
    height = config.eval.obstacle_height_m if obstacle_height_m is None else obstacle_height_m
    curriculum = dataclasses.replace(
        env.curriculum,
        stage=stage,
        fixed_landing_m=tuple(landing_m),
        fixed_obstacle_height_m=height if stage == "obstacle" else None,
        upward_fraction=0.0,  # every robot gets the box (the landing is fixed whatever this draws)
    )
    return dataclasses.replace(
        env,
        num_envs=config.eval.episodes,
        seed=config.eval.seed,
        curriculum=curriculum,
        randomisation=dataclasses.replace(env.randomisation, enabled=False),
        init_joint_noise_rad=config.eval.init_joint_noise_rad,
        termination=TerminationConfig(),
    )


def build_policy(config: QuadrupedJumpTrainConfig) -> ActorCritic:
    return ActorCritic(
        QuadrupedJumpEnv.observation_dim,
        QuadrupedJumpEnv.privileged_dim,
        QuadrupedJumpEnv.action_dim,
        action_clip=config.env.action_clip,
        **config.policy.network_kwargs(),
    )


def evaluate_policy(
    actor: torch.nn.Module,
    config: QuadrupedJumpTrainConfig,
    landing_m: tuple[float, float],
    stage: str | None = None,
) -> dict[str, float]:
    env = QuadrupedJumpEnv(eval_env_config(config, landing_m, stage))
    try:
        return jump_metrics(
            actor, env, seed=config.eval.seed, min_apex_gain_m=config.env.apex_gain_criterion_m
        )
    finally:
        env.close()


@one_writer
def train(
    config: QuadrupedJumpTrainConfig, run_dir: Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train every stage not yet done, each from the previous stage's weights; returns the summaries."""
    run_dir = Path(run_dir)
    prepare_run_dir(run_dir, to_dict(config), resume)
    configure_cpu_training(config.threads)
    summaries: dict[str, Any] = {}
    previous: Path | None = None
    for name in config.stages:
        summary_path = run_dir / name / "summary.json"
        if summary_path.is_file():
            summaries[name] = json.loads(summary_path.read_text())
        else:
            summaries[name] = _train_stage(config, name, run_dir / name, previous, progress)
        # From the stage's own directory, not the summary's path (relative to where that run started).
        previous = latest_checkpoint(run_dir / name / "checkpoints")
    return summaries


def _train_stage(
    config: QuadrupedJumpTrainConfig,
    name: str,
    stage_dir: Path,
    previous: Path | None,
    progress: bool,
) -> dict[str, Any]:
    stage = config.stage(name)
    torch.manual_seed(config.seed)
    env = QuadrupedJumpEnv(stage_env_config(config, name))
    ppo = PPO(build_policy(config), config.ppo, env.num_envs, seed=config.seed)
    key = "upward_criterion_rate" if name == "upward" else "success_rate"

    def evaluate(algo: PPO) -> dict[str, float]:
        metrics = evaluate_policy(algo.policy.deterministic_actor(), config, stage.eval_landing_m, name)
        metrics["criterion_met"] = float(metrics[key] >= stage.criterion_success)
        return metrics

    runner_config = RunnerConfig(
        max_iterations=stage.max_iterations,
        checkpoint_every=config.checkpoint_every,
        eval_every=config.eval.every,
        stop_at_criterion=stage.stop_at_criterion,
    )
    runner = OnPolicyRunner(env, ppo, stage_dir, runner_config, evaluate, progress=progress)
    checkpoint = runner.latest_checkpoint()
    if checkpoint is not None:
        runner.load(checkpoint)
    elif previous is not None or stage.init_from_bundle is not None:
        if stage.init_from_bundle is not None:
            load_bundle_actor(ppo.policy, Path(stage.init_from_bundle))
            ppo.hold_actor(stage.critic_warmup_iterations)
        else:
            ppo.policy.load_state_dict(torch.load(previous, weights_only=False)["ppo"]["policy"])
        unseen_inputs_start_ignored(ppo.policy)
        if stage.start_action_std is not None:
            with torch.no_grad():
                ppo.policy.log_std.fill_(math.log(stage.start_action_std))
    start = time.perf_counter()
    try:
        last_eval = runner.learn()
    finally:
        env.close()
    if not last_eval:
        last_eval = evaluate(ppo)
    summary = {"stage": name, **runner.summary(last_eval, start)}
    (stage_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def read_jump_bundle(bundle_dir: Path) -> BundleSpec:
    """A checked quadruped_jump bundle. The task is read first, so that another task's bundle is named
    as such rather than reported for the files a jump bundle has and it lacks."""
    task = (load_yaml(bundle_dir / MANIFEST_FILE) or {}).get("task")
    if task != "quadruped_jump":
        raise ConfigError(
            f"{bundle_dir} is a {task!r} bundle; this needs a quadruped_jump bundle "
            "(robotrl export RUN on a `train quadruped-jump` run)"
        )
    return read_bundle(bundle_dir)


def load_bundle_actor(policy: ActorCritic, bundle_dir: Path) -> None:
    """Load a jump bundle's actor, observation normaliser and action offset (its TorchScript) into policy."""
    read_jump_bundle(bundle_dir)
    path = bundle_dir / TORCHSCRIPT_FILE
    try:
        state = torch.jit.load(str(path)).state_dict()
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"{path} is not a TorchScript policy ({error}); export it again") from error
    own = policy.state_dict()
    wanted = {
        k: v for k, v in state.items() if k.split(".")[0] in ("actor", "obs_normalizer", "action_offset")
    }
    wrong = sorted(k for k, v in wanted.items() if k not in own or own[k].shape != v.shape)
    if wrong or not any(k.startswith("actor.") for k in wanted):
        raise ConfigError(
            f"{bundle_dir}'s actor does not fit this run's policy (mismatched: "
            f"{wrong or 'no actor weights'}): give the stage a bundle of the same architecture "
            "(policy.actor_hidden, observations)"
        )
    policy.load_state_dict(wanted, strict=False)


def unseen_inputs_start_ignored(policy: ActorCritic) -> dict[str, list[int]]:
    """Give the inputs a previous stage held constant (the box command before the obstacle stage) zero
    first-layer weights and a unit scale; returns their columns per network.

    Those weights never had a gradient, and the running normaliser, its variance 0, blows any new value
    up to its +-10 clip: the forward policy, shown boxes, stopped jumping (apex gain 0.6 -> 0.1 m,
    measured) and the obstacle stage made no progress in 125 iterations. Zeroed, the stage starts from
    the previous one's behaviour, and PPO learns the new inputs' weights from there.
    """
    unseen: dict[str, list[int]] = {}
    for name, normalizer, net in (
        ("actor", policy.obs_normalizer, policy.actor),
        ("critic", policy.privileged_normalizer, policy.critic),
    ):
        columns = normalizer.var < normalizer.eps**2
        if normalizer.count == 0 or not columns.any():
            continue
        with torch.no_grad():
            normalizer.mean[columns] = 0.0
            normalizer.var[columns] = 1.0
            net[0].weight[:, columns] = 0.0
        unseen[name] = columns.nonzero().squeeze(-1).tolist()
    return unseen


def load_run(
    run_dir: str | Path, stage: str | None = None, iteration: int | None = None
) -> tuple[QuadrupedJumpTrainConfig, ActorCritic]:
    """The config and the policy of a run's last trained stage (or of the named one), at its latest
    checkpoint (or at the named iteration's)."""
    config, path = _checkpoint(Path(run_dir), stage, iteration)
    return config, _policy_at(config, path)


def _policy_at(config: QuadrupedJumpTrainConfig, checkpoint: Path) -> ActorCritic:
    policy = build_policy(config)
    policy.load_state_dict(torch.load(checkpoint, weights_only=False)["ppo"]["policy"])
    return policy.eval()


def _checkpoint(
    run_dir: Path, stage: str | None, iteration: int | None
) -> tuple[QuadrupedJumpTrainConfig, Path]:
    config = load_config_file(QuadrupedJumpTrainConfig, run_dir / "config.yaml")
    names = list(config.stages)
    if stage is not None and stage not in names:
        raise ConfigError(f"{run_dir} has no stage {stage!r}; its stages are {names}")
    trained = [n for n in names if (run_dir / n / "checkpoints" / "latest.txt").is_file()]
    if not trained:
        raise ConfigError(
            f"{run_dir} has no checkpoint yet (no <stage>/checkpoints/latest.txt): train it first"
        )
    chosen = stage or trained[-1]
    checkpoints = run_dir / chosen / "checkpoints"
    if not (checkpoints / "latest.txt").is_file():
        raise ConfigError(f"stage {chosen!r} of {run_dir} has no checkpoint yet")
    if iteration is None:
        return config, checkpoints / (checkpoints / "latest.txt").read_text().strip()
    path = checkpoints / f"iter_{iteration:06d}.pt"
    if not path.is_file():
        kept = sorted(int(p.stem.removeprefix("iter_")) for p in checkpoints.glob("iter_*.pt"))
        raise ConfigError(
            f"stage {chosen!r} of {run_dir} has no checkpoint of iteration {iteration}; kept: {kept}"
        )
    return config, path


def jump_policy_spec(
    config: QuadrupedJumpTrainConfig, control_rate_hz: float, action_scale: float
) -> PolicySpec:
    """The bundle contract of a jumping policy: the jump env's 57 observations in, 12 joint actions out."""
    env, robot = config.env, config.env.robot
    return PolicySpec(
        task="quadruped_jump",
        robot="unitree_a1",
        observation_fields=tuple(ObservationField(*f) for f in OBSERVATION_FIELDS),
        normalization=Normalization(in_graph=True, method="running mean/std from training, clipped to +-10"),
        action_fields=tuple(
            ActionField(
                *f,
                scaling="joint target = default pose + 0.25 action (hips x0.5) [rad]",
                low=-env.action_clip,
                high=env.action_clip,
            )
            for f in ACTION_FIELDS
        ),
        control_rate_hz=control_rate_hz,
        safety_limits={
            "kp": robot.kp,
            "kd": robot.kd,
            "default_joint_pos_rad": [float(q) for q in robot.standing_joint_pos],
            "action_scale": action_scale,
            "hip_action_scale": env.hip_action_scale,
            "action_filter_alpha": ema_alpha(env.action_filter_hz, control_rate_hz),
            "min_base_height_m": env.termination.min_base_height_m,
        },
    )


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    stage: str | None = None,
    steps: int = 150,
    iteration: int | None = None,
) -> Path:
    """Write a bundle of a run's last (or the named) stage at its latest (or the named iteration's)
    checkpoint; parity runs on observations of its own jumps."""
    run_dir = Path(run_dir)
    config, checkpoint = _checkpoint(run_dir, stage, iteration)
    actor = _policy_at(config, checkpoint).deterministic_actor()
    env = QuadrupedJumpEnv(dataclasses.replace(eval_env_config(config, (0.0, 0.0)), num_envs=4))
    recorded = [env.reset(seed=config.eval.seed)]
    with torch.no_grad():
        for _ in range(steps - 1):
            obs, *_ = env.step(actor(recorded[-1]))
            recorded.append(obs)
    env.close()
    control_rate_hz, action_scale = 1.0 / env.dt, env.sim.config.action_scale
    summaries: dict[str, Any] = {
        name: json.loads((run_dir / name / "summary.json").read_text())
        for name in config.stages
        if (run_dir / name / "summary.json").is_file()
    }
    summaries["exported_checkpoint"] = f"{checkpoint.parent.parent.name}/{checkpoint.name}"
    return export_bundle(
        actor,
        out_dir,
        jump_policy_spec(config, control_rate_hz, action_scale),
        torch.cat(recorded),
        seed=config.seed,
        config=to_dict(config),
        metrics=summaries,
    )
