"""Diffusion policies from demonstrations, improved by residual RL (ResiP) and latent-noise steering (DSRL).

1. `demos`: the scripted Meta-World expert with noise (robotrl.envs.manipulation.demos).
2. `base`: a diffusion policy behaviour-cloned on them (robotrl.algos.diffusion_bc), then frozen.
3. `resip`: PPO on a Gaussian residual over the frozen base (robotrl.wrappers.residual).
4. `dsrl-sac` / `dsrl-na`: SAC in the base's initial-noise space (robotrl.wrappers.latent_noise).
Every stage resumes from what its directory holds; every final success rate is measured on the same
seeded episodes. The base's weights are hashed before and after RL: results.json says they never changed.

A run directory holds config.yaml, demos.npz, base/ (BC checkpoint, TensorBoard), base.pt, resip/ and
dsrl-*/ (checkpoints, TensorBoard, result.json), bundles/, results.md, results.json and curves.png.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.algos.diffusion_bc import train_diffusion_bc
from robotrl.algos.off_policy_runner import OffPolicyRunner, OffPolicyRunnerConfig
from robotrl.algos.on_policy_runner import OnPolicyRunner, RunnerConfig
from robotrl.algos.ppo import PPO
from robotrl.algos.sac import SAC
from robotrl.config import ConfigError, to_dict
from robotrl.cpu_training import configure_cpu_training
from robotrl.envs.manipulation.demos import DemoDataset, collect_demos
from robotrl.envs.manipulation.evaluation import ChunkSteps, evaluate_success
from robotrl.envs.manipulation.metaworld_env import MetaWorldConfig, MetaWorldVecEnv
from robotrl.policies.diffusion import DiffusionPolicy
from robotrl.policies.mlp import ActorCritic
from robotrl.recipes.manipulation_config import ManipulationConfig, load_run_config
from robotrl.wrappers.latent_noise import LatentNoiseEnv
from robotrl.wrappers.residual import ResidualEnv

BASE_FILE = "base.pt"
RL_STAGES = ("resip", "dsrl-sac", "dsrl-na")
DEMOS_FILE = "demos.npz"


# ------------------------------------------------------------------------------------------ pieces
def make_env(config: ManipulationConfig, num_envs: int, seed: int) -> MetaWorldVecEnv:
    e = config.env
    return MetaWorldVecEnv(MetaWorldConfig(config.task, num_envs, e.workers, e.max_episode_steps, seed))


def make_eval_env(config: ManipulationConfig) -> MetaWorldVecEnv:
    """The env every final and in-training evaluation flies, seeded apart from the training envs."""
    return make_env(config, config.env.num_envs, config.seed + 7)


def weights_sha256(module: torch.nn.Module) -> str:
    """Hash of every parameter and buffer: equal before and after RL iff the base stayed frozen."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_base(run_dir: Path) -> DiffusionPolicy:
    """The frozen base policy of a run: eval mode, no gradients."""
    path = run_dir / BASE_FILE
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: train the base first (`robotrl train diffusion`)")
    return DiffusionPolicy.from_state(torch.load(path, weights_only=False)).requires_grad_(False)


def base_act(base: DiffusionPolicy, seed: int, zero_noise: bool = False):  # -> evaluation.Act
    """The base alone: a chunk from fresh standard-normal noise at every replanning (or from zeros)."""
    generator = torch.Generator().manual_seed(seed)

    def act(obs: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
        shape = (obs.shape[0], *base.noise_shape)
        noise = torch.zeros(shape) if zero_noise else torch.randn(shape, generator=generator)
        return base.sample(obs, noise)[:, : base.action_horizon]

    return act


def without_curves(result: dict[str, Any]) -> dict[str, Any]:
    """A stage's result without its learning curves: the figures for results.json and bundle provenance."""
    return {k: v for k, v in result.items() if "curve" not in k}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def prepare_run(config: ManipulationConfig, run_dir: Path) -> None:
    """Write config.yaml for a new run; a run that exists must have been made with the same task."""
    import yaml

    path = run_dir / "config.yaml"
    if path.is_file():
        existing = load_run_config(run_dir)
        if existing.task != config.task:
            raise ConfigError(
                f"{run_dir} is a run of {existing.task}, not {config.task}: use another --run-dir"
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


# ------------------------------------------------------------------------------------------ stages
def demos_stage(config: ManipulationConfig, run_dir: Path, progress: bool = True) -> DemoDataset:
    path = run_dir / DEMOS_FILE
    if path.is_file():
        return DemoDataset.load(path)
    e = config.env
    demo_config = dataclasses.replace(
        config.demos, task=config.task, seed=config.seed, num_envs=e.num_envs, workers=e.workers,
        max_episode_steps=e.max_episode_steps,
    )  # fmt: skip
    start = time.perf_counter()
    dataset = collect_demos(demo_config, progress)
    dataset.meta["wall_s"] = time.perf_counter() - start
    dataset.save(path)
    return dataset


def base_stage(config: ManipulationConfig, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Behaviour cloning on the demos, then the base's success rate; reused when done."""
    result_path = run_dir / "base" / "result.json"
    if result_path.is_file() and (run_dir / BASE_FILE).is_file():
        return json.loads(result_path.read_text())
    configure_cpu_training(config.threads)
    dataset = demos_stage(config, run_dir, progress)
    labels = dataset.executed if config.labels == "executed" else dataset.actions
    start = time.perf_counter()
    policy, bc = train_diffusion_bc(
        dataset.obs, labels, dataset.episode_ends, config.diffusion, config.bc, run_dir / "base",
        seed=config.seed, progress=progress,
    )  # fmt: skip
    train_s = time.perf_counter() - start
    torch.save(policy.state(), run_dir / BASE_FILE)
    base = load_base(run_dir)
    with make_eval_env(config) as env:
        sampled, zero = (
            evaluate_success(
                ChunkSteps(env), base_act(base, config.seed, zero), config.eval_episodes, config.eval_seed
            )
            for zero in (False, True)
        )
    result = {
        "success_rate": sampled["success_rate"],
        "eval": sampled,
        "eval_zero_noise": zero,
        "demos": {"episodes": dataset.num_episodes, "steps": int(dataset.obs.shape[0]), **dataset.meta},
        "bc_iterations": bc.iteration,
        "bc_final_loss": bc.history[-1]["loss"] if bc.history else float("nan"),
        "bc_loss_curve": bc.history,
        "train_wall_s": train_s,
        "base_sha256": weights_sha256(base),
    }
    _write_json(result_path, result)
    return result


def resip_stage(config: ManipulationConfig, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """PPO on the residual; success evaluated every `resip.eval_every` iterations and at the end."""
    r = config.resip
    out = run_dir / "resip"
    result_path = out / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    configure_cpu_training(config.threads)
    base = load_base(run_dir)
    sha_before = weights_sha256(base)
    env = ResidualEnv(make_env(config, r.num_envs, config.seed + 11), base, r.scale, seed=config.seed)
    eval_env = ResidualEnv(make_eval_env(config), base, r.scale, seed=config.seed)
    policy = ActorCritic(
        env.observation_dim, env.observation_dim, env.action_dim, actor_hidden=r.hidden,
        critic_hidden=r.hidden, init_log_std=r.init_log_std, normalize_obs=True, activation="relu",
    )  # fmt: skip
    ppo = PPO(policy, r.ppo, env.num_envs, seed=config.seed)
    if not r.learn_std:
        ppo.fix_action_std()
    curve: list[dict[str, float]] = []

    def evaluate(ppo: PPO) -> dict[str, float]:
        actor = ppo.policy.deterministic_actor()
        result = evaluate_success(
            eval_env, lambda obs, fresh: actor(obs), max(32, config.eval_episodes // 3), config.eval_seed + 1
        )
        return {"success_rate": result["success_rate"]}

    runner = OnPolicyRunner(
        env, ppo, out, RunnerConfig(max_iterations=r.iterations, checkpoint_every=10,
                                    eval_every=r.eval_every, stop_at_criterion=False),
        evaluate=evaluate if r.eval_every else None, progress=progress,
    )  # fmt: skip
    checkpoint = runner.latest_checkpoint()
    if checkpoint is not None:
        runner.load(checkpoint)
    try:
        runner.learn()
        actor = ppo.policy.deterministic_actor()
        final = evaluate_success(
            eval_env, lambda obs, fresh: actor(obs), config.eval_episodes, config.eval_seed
        )
    finally:
        env.env.close()
        eval_env.env.close()
    for h in runner.history:
        point = {
            "env_steps": h["perf/env_steps"],
            "train_success_rate": h.get("episode/success_rate", float("nan")),
        }
        if "eval/success_rate" in h:
            point["success_rate"] = h["eval/success_rate"]
        curve.append(point)
    result = {
        "success_rate": final["success_rate"],
        "eval": final,
        "env_steps": runner.env_steps,
        "train_wall_s": runner.wall_s,
        "curve": curve,
        "base_sha256_before": sha_before,
        "base_sha256_after": weights_sha256(base),
    }
    torch.save({"policy": ppo.policy.state_dict(), "config": to_dict(r)}, out / "residual.pt")
    _write_json(result_path, result)
    return result


def dsrl_stage(config: ManipulationConfig, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """SAC (or noise-aliased SAC) on the base's initial noise, `dsrl.total_env_steps` real env steps."""
    d = config.dsrl
    out = run_dir / f"dsrl-{d.variant}"
    result_path = out / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    configure_cpu_training(config.threads)
    base = load_base(run_dir)
    sha_before = weights_sha256(base)
    env = LatentNoiseEnv(make_env(config, d.num_envs, config.seed + 13), base, d.noise_bound)
    eval_env = LatentNoiseEnv(make_eval_env(config), base, d.noise_bound)
    sac_config = dataclasses.replace(d.sac, action_bound=d.noise_bound, noise_aliasing=d.variant == "na")
    sac = SAC(env.observation_dim, env.action_dim, sac_config, seed=config.seed,
              decoder=env if d.variant == "na" else None)  # fmt: skip

    def score(sac: SAC, episodes: int, seed: int) -> dict[str, dict[str, float]]:
        """Both noise policies; "success_rate" is the configured one's."""
        return {
            mode: evaluate_success(
                eval_env,
                lambda obs, fresh, d=mode == "deterministic": sac.act(obs, deterministic=d),
                episodes,
                seed,
            )
            for mode in ("stochastic", "deterministic")
        }

    def evaluate(sac: SAC) -> dict[str, float]:
        runs = score(sac, max(32, config.eval_episodes // 3), config.eval_seed + 1)
        best = max(runs, key=lambda mode: runs[mode]["success_rate"])
        return {
            "success_rate": runs[best if d.policy == "auto" else d.policy]["success_rate"],
            "success_rate_stochastic": runs["stochastic"]["success_rate"],
            "success_rate_deterministic": runs["deterministic"]["success_rate"],
        }

    runner = OffPolicyRunner(
        env, sac, out,
        OffPolicyRunnerConfig(total_env_steps=d.total_env_steps, checkpoint_every=10_000,
                              eval_every=d.eval_every, log_every=1_000, stop_at_criterion=False),
        evaluate=evaluate, progress=progress,
    )  # fmt: skip
    checkpoint = runner.latest_checkpoint()
    if checkpoint is not None:
        runner.load(checkpoint)
    try:
        runner.learn()
        policy = d.policy
        if policy == "auto":  # chosen on the in-training evaluation's episodes, never the final ones
            last = evaluate(sac)
            policy = max(("stochastic", "deterministic"), key=lambda m: last[f"success_rate_{m}"])
        finals = score(sac, config.eval_episodes, config.eval_seed)
        final = finals[policy]
    finally:
        env.env.close()
        eval_env.env.close()
    curve = [
        {
            "env_steps": h["env_steps"],
            "success_rate": h["eval/success_rate"],
            "success_rate_stochastic": h["eval/success_rate_stochastic"],
            "success_rate_deterministic": h["eval/success_rate_deterministic"],
        }
        for h in runner.history
        if "eval/success_rate" in h
    ]
    result = {
        "success_rate": final["success_rate"],
        "policy": policy,
        "eval": final,
        "eval_other": finals["deterministic" if policy == "stochastic" else "stochastic"],
        "env_steps": runner.env_steps,
        "train_wall_s": runner.wall_s,
        "curve": curve,
        "train_curve": [
            {"env_steps": h["env_steps"], "train_success_rate": h["episode/success_rate"]}
            for h in runner.history
            if "episode/success_rate" in h
        ],
        "base_sha256_before": sha_before,
        "base_sha256_after": weights_sha256(base),
    }
    torch.save({"actor": sac.actor.state_dict(), "config": to_dict(sac_config)}, out / "noise_actor.pt")
    _write_json(result_path, result)
    return result


# ------------------------------------------------------------------------------------------ report
def results_table(config: ManipulationConfig, results: dict[str, dict[str, Any]]) -> str:
    """results.md: every policy's success on the same episodes, with the env steps and wall time it cost."""
    base = results["base"]
    rows = [
        f"{config.task}: success over {int(base['eval']['episodes'])} seeded episodes "
        f"(max {config.env.max_episode_steps} steps each)\n",
        "| policy | success | gain [points] | RL env steps | RL wall-clock [s] | base frozen | bundle "
        "(onnxruntime) |",
        "|---|---|---|---|---|---|---|",
        f"| base (diffusion BC, sampled noise) | {base['success_rate']:.2f} | | | "
        f"BC {base['train_wall_s']:.0f} | | |",
        f"| base, zero noise (deterministic) | {base['eval_zero_noise']['success_rate']:.2f} | | | | | |",
    ]
    for name, label in (("resip", "ResiP (PPO residual)"), ("dsrl-sac", "DSRL-SAC"), ("dsrl-na", "DSRL-NA")):
        if name not in results:
            continue
        r = results[name]
        gain = 100 * (r["success_rate"] - base["success_rate"])
        frozen = "yes" if r["base_sha256_before"] == r["base_sha256_after"] == base["base_sha256"] else "NO"
        if "policy" in r:  # DSRL: which noise policy, and how the other one did
            label += f", {r['policy']} noise (other: {r['eval_other']['success_rate']:.2f})"
        b = r.get("bundle")
        exported = f"{b['success_rate']:.2f}, chunk {b['chunk_ms_p50']:.2f} ms" if b else "not exported"
        rows.append(
            f"| {label} | {r['success_rate']:.2f} | {gain:+.0f} | {r['env_steps']:,} | "
            f"{r['train_wall_s']:.0f} | {frozen} | {exported} |"
        )
    return "\n".join(rows) + "\n"


def plot_curves(config: ManipulationConfig, results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    base = results["base"]
    bc = base.get("bc_loss_curve", [])
    if bc:
        axes[0].plot([h["iteration"] for h in bc], [h["loss"] for h in bc])
        axes[0].set_yscale("log")
    axes[0].set(title="diffusion BC: denoising loss", xlabel="iteration", ylabel="MSE")
    ax = axes[1]
    ax.axhline(base["success_rate"], color="grey", ls="--", label="base (sampled noise)")
    plotted = False
    for name in RL_STAGES:
        points = [p for p in results.get(name, {}).get("curve", []) if "success_rate" in p]
        if points:
            steps = [p["env_steps"] for p in points]
            ax.plot(steps, [p["success_rate"] for p in points], marker="o", label=name)
            plotted = True
    ax.set(
        title=f"{config.task}: evaluation success",
        xlabel="RL env steps",
        ylabel="success rate",
        ylim=(0, 1.02),
    )
    if plotted:  # a log axis needs points; a run without in-training evaluations has none
        ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collect_results(config: ManipulationConfig, run_dir: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for name in ("base", "resip", "dsrl-sac", "dsrl-na"):
        path = run_dir / name / "result.json"
        if path.is_file():
            results[name] = json.loads(path.read_text())
    if "base" not in results:
        raise ConfigError(
            f"{run_dir} has no trained base yet (`robotrl train diffusion --run-dir {run_dir}`)"
        )
    return results


def write_report(config: ManipulationConfig, run_dir: Path) -> dict[str, dict[str, Any]]:
    results = collect_results(config, run_dir)
    (run_dir / "results.md").write_text(results_table(config, results))
    _write_json(
        run_dir / "results.json",
        {name: without_curves(result) for name, result in results.items()},
    )
    plot_curves(config, results, run_dir / "curves.png")
    return results


# ------------------------------------------------------------------------------------------ export
METAWORLD_OBSERVATION_FIELDS = (
    ("hand_position", 3, "m", "world frame of the Sawyer scene"),
    ("gripper_opening", 1, "1", "normalised finger distance, 0 closed .. 1 open"),
    ("object1_position", 3, "m", "world"),
    ("object1_quaternion", 4, "1", "wxyz, world"),
    ("object2_position", 3, "m", "world (zeros when the task has one object)"),
    ("object2_quaternion", 4, "1", "wxyz, world"),
    ("previous_frame", 18, "mixed", "the 18 values above at the previous step"),
    ("goal_position", 3, "m", "world"),
)
METAWORLD_ACTION_FIELDS = (
    ("hand_displacement", 3, "1", "world xyz", "times 0.01 m per step onto the mocap target"),
    ("gripper_effort", 1, "1", "-1 open .. +1 close", "onto the finger actuators' control range"),
)


def metaworld_policy_spec(
    config: ManipulationConfig, base: DiffusionPolicy, sampled: str | None
):  # -> PolicySpec
    from robotrl.export.bundle import (
        ActionField,
        Chunking,
        Normalization,
        ObservationField,
        PolicySpec,
        RecurrentState,
        SampledInput,
    )
    from robotrl.policies.chunked import initial_chunk_state

    initial = initial_chunk_state(base)
    return PolicySpec(
        task=f"metaworld_{config.task}",
        robot="sawyer_metaworld",
        observation_fields=tuple(ObservationField(*f) for f in METAWORLD_OBSERVATION_FIELDS),
        normalization=Normalization(in_graph=True, method="mean/std of the demonstrations, clipped to +-5"),
        action_fields=tuple(ActionField(*f) for f in METAWORLD_ACTION_FIELDS),
        control_rate_hz=80.0,  # Meta-World: 5 MuJoCo steps of 2.5 ms a control step
        safety_limits={"action_abs_max": 1.0, "max_episode_steps": config.env.max_episode_steps},
        recurrent_state=(
            RecurrentState("chunk_state", "chunk_state_next", ("batch", len(initial)), tuple(initial)),
        ),
        sampled_inputs=(SampledInput(sampled, base.prediction_horizon * base.action_dim),) if sampled else (),
        chunking=Chunking(
            prediction_horizon=base.prediction_horizon,
            action_horizon=base.action_horizon,
            inference_steps=base.inference_steps,
            sampler="ddim, eta 0, x0 clipped to [-1, 1] (diffusers' DDIMScheduler coefficients)",
            in_graph=True,
        ),
    )


def _recorded_observations(
    config: ManipulationConfig, base: DiffusionPolicy, steps: int = 64
) -> torch.Tensor:
    """Observations the base policy visits, for the export's parity check."""
    act = base_act(base, config.seed)
    with make_env(config, 4, config.seed + 17) as env:
        obs = env.reset(seed=config.eval_seed)
        recorded = [obs]
        while len(recorded) * 4 < steps:
            obs, *_ = env.step_chunk(act(obs, torch.zeros(4, dtype=torch.bool)))
            recorded.append(obs)
    return torch.cat(recorded)


def export_stage(config: ManipulationConfig, run_dir: Path, name: str, out: Path | None = None) -> Path:
    """The bundle of stage `name` ('resip', 'dsrl-sac' or 'dsrl-na'): `out`, or bundles/<name> (replaced)."""
    import shutil

    from robotrl.algos.sac import SquashedGaussianActor
    from robotrl.config import from_dict
    from robotrl.export.export import export_bundle
    from robotrl.policies.chunked import ChunkedNoisePolicy, ChunkedResidualPolicy

    base = load_base(run_dir)
    result = json.loads((run_dir / name / "result.json").read_text())
    sampled = "base_noise" if name == "resip" else None
    if name == "resip":
        state = torch.load(run_dir / "resip" / "residual.pt", weights_only=False)
        r = config.resip
        policy = ActorCritic(base.obs_dim + base.action_dim, base.obs_dim + base.action_dim, base.action_dim,
                             actor_hidden=r.hidden, critic_hidden=r.hidden, activation="relu")  # fmt: skip
        policy.load_state_dict(state["policy"])
        module: torch.nn.Module = ChunkedResidualPolicy(base, policy.deterministic_actor(), r.scale)
    else:
        from robotrl.algos.sac import SACConfig

        state = torch.load(run_dir / name / "noise_actor.pt", weights_only=False)
        sac_config = from_dict(SACConfig, state["config"])
        actor = SquashedGaussianActor(base.obs_dim, base.prediction_horizon * base.action_dim, sac_config)
        actor.load_state_dict(state["actor"])
        stochastic = result.get("policy", "deterministic") == "stochastic"
        module = ChunkedNoisePolicy(base, actor.eval(), config.dsrl.noise_bound, stochastic)
        sampled = "actor_noise" if stochastic else None
    if out is None:
        out = run_dir / "bundles" / name
        if out.exists():
            shutil.rmtree(out)
    metrics = without_curves(result)
    return export_bundle(
        module.eval(), out, metaworld_policy_spec(config, base, sampled),
        _recorded_observations(config, base), seed=config.seed, config=to_dict(config), metrics=metrics,
    )  # fmt: skip


def bundle_act(bundle_dir: Path, num_envs: int, seed: int = 0):  # -> evaluation.Act
    """A bundle through PolicyRunner (onnxruntime, as on the robot), one action a step, reset per episode."""
    from robotrl.runtime.policy_runner import PolicyRunner

    runner = PolicyRunner(bundle_dir, seed=seed)
    runner.reset(num_envs)

    def act(obs: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
        if fresh.any():
            runner.reset(num_envs, rows=fresh.numpy())
        return torch.from_numpy(runner.step(obs.numpy()))

    return act


def evaluate_bundle(
    config: ManipulationConfig, bundle_dir: Path, episodes: int | None = None
) -> dict[str, float]:
    """Success of a bundle flown through onnxruntime on the run's seeded evaluation episodes."""
    with make_eval_env(config) as env:
        return evaluate_success(
            env,
            bundle_act(bundle_dir, env.num_envs, config.seed),
            episodes or config.eval_episodes,
            config.eval_seed,
        )


def chunk_latency(bundle_dir: Path, calls: int = 300) -> dict[str, float]:
    """Per-call latency of a bundle step that samples a new chunk (one thread, batch 1)."""
    from robotrl.runtime.policy_runner import PolicyRunner

    runner = PolicyRunner(bundle_dir, num_threads=1)
    obs = np.zeros(runner.observation_dim, dtype=np.float32)
    times = []
    for _ in range(calls):
        runner.reset(1)  # the first step after a reset samples a chunk
        start = time.perf_counter()
        runner.step(obs)
        times.append(time.perf_counter() - start)
    ms = 1e3 * np.asarray(times[20:])
    return {"chunk_ms_p50": float(np.median(ms)), "chunk_ms_p99": float(np.percentile(ms, 99))}


def export_and_check(config: ManipulationConfig, run_dir: Path, name: str, out: Path | None = None) -> dict:
    """Export, then fly the bundle through onnxruntime on the run's episodes and time a chunk; the figures
    go into the stage's result.json under "bundle"."""
    path = export_stage(config, run_dir, name, out)
    figures = {"path": str(path), **evaluate_bundle(config, path), **chunk_latency(path)}
    result_path = run_dir / name / "result.json"
    result = json.loads(result_path.read_text())
    result["bundle"] = figures
    _write_json(result_path, result)
    return figures
