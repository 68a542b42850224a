"""The `robotrl` command: train, evaluate, export, and the demo that chains them.

robotrl train quadrotor --platform crazyflie
robotrl eval runs/quadrotor-crazyflie-s0 --baseline
robotrl export runs/quadrotor-crazyflie-s0 --out bundles/crazyflie_hover
robotrl demo
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robotrl.config import ConfigError, load_yaml
from robotrl.export.bundle import BundleError
from robotrl.tables import markdown_table, rich_table

if TYPE_CHECKING:
    from robotrl.deployment import QuadrupedDeploymentConfig

log = logging.getLogger("robotrl")


# ------------------------------------------------------------------------------------------ controllers
class _RunnerController:
    """A bundle flown through PolicyRunner (onnxruntime), as on the robot."""

    def __init__(self, bundle_dir: Path):
        from robotrl.runtime.policy_runner import PolicyRunner

        self.runner = PolicyRunner(bundle_dir)

    def reset(self, batch_size: int) -> None:
        self.runner.reset(batch_size)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.runner.step(obs)


def _geometric(platform: str, dt: float) -> object:
    from robotrl.control.geometric import GeometricController, NominalQuadrotor
    from robotrl.envs.quadrotor.platforms import platform_path

    return GeometricController(NominalQuadrotor.from_platform_yaml(platform_path(platform)), dt=dt)


def _resolve_target(target: str) -> tuple[str, object, str | None]:
    """(label, controller, platform the target was trained on) for a run dir, a bundle dir or 'geometric'.

    A `train raptor` run stands for the student bundle it exported.
    """
    if target == "geometric":
        return "geometric", None, None
    path = Path(target)
    if _is_raptor_run(path):
        path = path / "bundle"
    if (path / "policy.yaml").is_file():
        controller = _RunnerController(path)
        return f"bundle:{path.name}", controller, controller.runner.spec.policy.robot
    if (path / "config.yaml").is_file():
        from robotrl.envs.quadrotor.evaluation import TorchController
        from robotrl.recipes.quadrotor import load_run

        config, policy = load_run(path)
        return f"run:{path.name}", TorchController(policy.deterministic_actor()), config.env.platform
    raise ConfigError(
        f"'{target}' is neither a policy bundle (no policy.yaml), a training run (no config.yaml) "
        "nor 'geometric'"
    )


# ------------------------------------------------------------------------------------------ commands
def _overrides(args: argparse.Namespace, flags: tuple[tuple[str, str], ...]) -> list[str]:
    """--set items plus the shortcut flags that were given, as dotted overrides."""
    given = ((key, getattr(args, flag)) for flag, key in flags)
    return [*args.set, *(f"{key}={value}" for key, value in given if value is not None)]


def _load_train_config(
    args: argparse.Namespace, load_config: Callable[..., Any], overrides: list[str]
) -> Any:
    """The config of a new run (--config or the default), or of the run being resumed."""
    if not args.resume:
        return load_config(args.config, overrides)
    if args.run_dir is None:
        raise ConfigError("--resume needs --run-dir RUN (the run to continue)")
    return load_config(Path(args.run_dir) / "config.yaml", overrides)


def cmd_train(args: argparse.Namespace) -> int:
    if args.task == "raptor":
        return cmd_train_raptor(args)
    if args.task in MANIPULATION_STAGES:
        return cmd_train_manipulation(args)
    if args.task == "quadruped-jump":
        return cmd_train_quadruped_jump(args)
    from robotrl.recipes.quadrotor import load_config, train

    overrides = _overrides(
        args,
        (("platform", "env.platform"), ("num_envs", "env.num_envs"), ("seed", "seed"), ("threads", "threads"),
         ("max_iterations", "runner.max_iterations")),
    )  # fmt: skip
    config = _load_train_config(args, load_config, overrides)
    run_dir = Path(
        args.run_dir
        or f"runs/quadrotor-{Path(config.env.platform).stem}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    print(
        f"training in {run_dir} ({config.env.num_envs} envs, platform {config.env.platform}, "
        f"{config.threads} threads)"
    )
    summary = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    _print_metrics({"trained": summary["eval"]})
    status = "met" if summary["criterion_met"] else "NOT met"
    print(
        f"hover criterion {status} after {summary['iterations']} iterations, "
        f"{summary['env_steps']:,} env steps, "
        f"{summary['train_wall_s']:.1f} s of training wall-clock; run: {run_dir}"
    )
    return 0


def cmd_train_raptor(args: argparse.Namespace) -> int:
    """Teacher farm, selection, distillation into the recurrent student, bundle."""
    from robotrl.recipes.raptor import load_config, train

    if args.platform is not None or args.num_envs is not None:
        raise ConfigError(
            "--platform and --num-envs belong to `train quadrotor`; raptor samples its quadrotors "
            "(use --teachers N and --set farm.envs_per_teacher=E)"
        )
    overrides = _overrides(
        args,
        (("teachers", "farm.num_teachers"), ("backend", "farm.backend"), ("address", "farm.ray_address"),
         ("seed", "seed"), ("threads", "threads"), ("max_iterations", "farm.iterations")),
    )  # fmt: skip
    config = _load_train_config(args, load_config, overrides)
    farm = config.farm
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.run_dir or f"runs/raptor-{farm.num_teachers}t-s{config.seed}-{stamp}")
    precision = (
        f" + {farm.precision_iterations} at action std {farm.precision_action_std}"
        if farm.precision_iterations
        else ""
    )
    print(
        f"training {farm.num_teachers} teachers ({farm.group_size} a group, {farm.envs_per_teacher} envs "
        f"each, {farm.iterations} PPO iterations{precision}, backend {farm.backend}) and the student in "
        f"{run_dir}"
    )
    summary = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    vs, speed = summary["student_vs_teachers"], summary.get("speedup")
    lines = [
        f"teachers kept: {summary['teachers_kept']} of {summary['teachers_trained']}, "
        f"{summary.get('teachers_retrained', 0)} retrained ({run_dir / 'teachers.md'})"
    ]
    if speed:
        lines.append(
            f"batched farm: {speed['batched_teacher_steps_per_s']:,.0f} teacher env-steps/s, one teacher "
            f"alone {speed['one_by_one_teacher_steps_per_s']:,.0f} ({speed['speedup']:.1f}x)"
        )
    lines += [
        f"on the kept teachers' quadrotors: student success {vs['student_success_rate']:.3f}, median hover "
        f"RMSE {vs['student_rmse_median_m']:.4f} m; teachers {vs['teachers_success_rate']:.3f}, "
        f"{vs['teachers_rmse_median_m']:.4f} m",
        f"student: {summary['student_parameters']} parameters; bundle: {summary['bundle']}",
        f"wall-clock: {summary['total_wall_s']:.0f} s (teachers {summary.get('teachers_wall_s', 0.0):.0f} s, "
        f"student {summary.get('student_wall_s', 0.0):.0f} s)",
    ]
    print("\n".join(lines))
    return 0


MANIPULATION_STAGES = ("diffusion", "resip", "dsrl")
EVAL_SEED = 12345
"""Seed of `robotrl eval`'s starts unless --seed is given."""


def cmd_train_manipulation(args: argparse.Namespace) -> int:
    """diffusion: demos + BC base; resip / dsrl: RL over that base (trained first when missing)."""
    from robotrl.algos.checkpoints import run_dir_lock
    from robotrl.recipes import manipulation as m
    from robotrl.recipes.manipulation_config import load_config

    if args.platform is not None or args.teachers is not None or args.backend is not None:
        raise ConfigError(f"--platform, --teachers and --backend do not apply to `train {args.task}`")
    overrides = _overrides(
        args,
        (("env_task", "task"), ("variant", "dsrl.variant"), ("seed", "seed"), ("threads", "threads"),
         ("num_envs", "env.num_envs")),
    )  # fmt: skip
    run_dir_given = args.run_dir is not None
    if run_dir_given and (Path(args.run_dir) / "config.yaml").is_file() and not args.resume:
        args.resume = True  # a manipulation run is a sequence of stages: later ones reuse earlier ones
    config = _load_train_config(args, load_config, overrides)
    if args.max_iterations is not None:
        key = {"diffusion": "bc", "resip": "resip"}.get(args.task)
        if key is None:
            raise ConfigError("--max-iterations: DSRL's budget is env steps (--set dsrl.total_env_steps=N)")
        getattr(config, key).iterations = args.max_iterations
    run_dir = Path(args.run_dir or f"runs/manip-{config.task}-s{config.seed}")
    with run_dir_lock(run_dir):
        m.prepare_run(config, run_dir)
        progress = not args.no_progress
        print(f"{args.task} on {config.task} in {run_dir}")
        base = m.base_stage(config, run_dir, progress)
        print(
            f"base (diffusion BC on {base['demos']['episodes']} demos, {base['train_wall_s']:.0f} s): "
            f"success {base['success_rate']:.2f} with sampled noise, "
            f"{base['eval_zero_noise']['success_rate']:.2f} with zero noise"
        )
        if args.task == "resip":
            result = m.resip_stage(config, run_dir, progress)
        elif args.task == "dsrl":
            result = m.dsrl_stage(config, run_dir, progress)
        else:
            result = None
        if result is not None:
            print(
                f"{args.task}: success {result['success_rate']:.2f} after {result['env_steps']:,} env steps "
                f"and {result['train_wall_s']:.0f} s; base frozen: "
                f"{result['base_sha256_before'] == result['base_sha256_after']}"
            )
        m.write_report(config, run_dir)
    print((run_dir / "results.md").read_text())
    print(f"wrote {run_dir / 'results.md'}, {run_dir / 'curves.png'}")
    return 0


def cmd_train_quadruped_jump(args: argparse.Namespace) -> int:
    """In-place jumps, then the forward curriculum from that policy (robotrl.recipes.quadruped_jump)."""
    from robotrl.envs.quadruped.curriculum import STAGES
    from robotrl.recipes.quadruped_jump import load_config, train

    if args.platform is not None or args.teachers is not None or args.backend is not None or args.env_task:
        raise ConfigError(
            "--platform, --teachers, --backend and --task do not apply to `train quadruped-jump`"
        )
    overrides = _overrides(args, (("num_envs", "env.num_envs"), ("seed", "seed"), ("threads", "threads")))
    if args.stage is not None:
        stages = STAGES[: STAGES.index(args.stage) + 1]
        overrides.append(f"stages=[{', '.join(stages)}]")
    if args.max_iterations is not None:
        if args.stage is None:
            raise ConfigError("--max-iterations needs --stage upward|forward|obstacle (the stage it budgets)")
        overrides.append(f"{args.stage}.max_iterations={args.max_iterations}")
    config = _load_train_config(args, load_config, overrides)
    run_dir = Path(args.run_dir or f"runs/quadruped-jump-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"training {' then '.join(config.stages)} jumps in {run_dir} ({config.env.num_envs} envs)")
    summaries = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    for name, summary in summaries.items():
        ev = summary["eval"]
        status = "met" if summary["criterion_met"] else "NOT met"
        print(
            f"{name}: criterion {status} after {summary['iterations']} iterations, "
            f"{summary['env_steps']:,} env steps, {summary['train_wall_s']:.0f} s; "
            f"success {ev['success_rate']:.2f}, apex gain {ev['apex_gain_m_mean']:.3f} m, "
            f"landing error {ev['landing_error_m_mean']:.3f} m"
        )
    print(f"run: {run_dir}")
    return 0


def cmd_demos(args: argparse.Namespace) -> int:
    from robotrl.envs.manipulation.demos import DemoConfig, collect_demos
    from robotrl.envs.manipulation.metaworld_env import check_task, task_names

    if args.action == "tasks":
        print("\n".join(task_names()))
        return 0
    check_task(args.task)
    config = DemoConfig(
        task=args.task, episodes=args.episodes, noise_std=args.noise, perturb_probability=args.perturb,
        keep=args.keep, num_envs=args.num_envs, seed=args.seed,
    )  # fmt: skip
    out = Path(args.out or f"runs/demos/{args.task}-{args.episodes}.npz")
    dataset = collect_demos(config, progress=not args.no_progress)
    dataset.save(out)
    print(
        f"{dataset.num_episodes} demonstrations ({dataset.obs.shape[0]} steps, "
        f"{int(dataset.success.sum())} successful) of {args.task} from "
        f"{dataset.meta['episodes_flown']} flown (expert success with this noise "
        f"{dataset.meta['expert_success_rate']:.2f}); wrote {out}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from robotrl.recipes.manipulation import BASE_FILE

    if args.iteration is not None and not _is_jump_run(Path(args.run)):
        raise ConfigError(f"--iteration is for quadruped-jump runs; {args.run} is not one")
    if (Path(args.run) / BASE_FILE).is_file():
        return _export_manipulation(args)
    if _is_jump_run(Path(args.run)):
        from robotrl.recipes.quadruped_jump import export_run as export_jump_run

        out = Path(args.out or Path(args.run) / "bundle")
        path = export_jump_run(args.run, out, iteration=args.iteration)
        print(f"bundle written to {path} (policy.onnx, policy.pt, policy.yaml; parity checked)")
        return 0
    if args.out is None:
        raise ConfigError("--out BUNDLE_DIR is required to export a quadrotor run")
    from robotrl.recipes.quadrotor import export_run

    path = export_run(args.run, args.out)
    print(f"bundle written to {path} (policy.onnx, policy.pt, policy.yaml; parity checked)")
    return 0


def _export_manipulation(args: argparse.Namespace) -> int:
    """A manipulation run's RL policies as bundles, each flown through onnxruntime on the run's episodes."""
    from robotrl.recipes import manipulation as m
    from robotrl.recipes.manipulation_config import load_run_config

    run_dir = Path(args.run)
    config = load_run_config(run_dir)
    finished = [s for s in m.RL_STAGES if (run_dir / s / "result.json").is_file()]
    stages = [args.stage] if args.stage else finished
    if not stages:
        raise ConfigError(f"{run_dir} has no finished RL stage to export (train resip or dsrl first)")
    for stage in stages:
        bundle = m.export_and_check(config, run_dir, stage, Path(args.out) if args.out else None)
        print(
            f"{stage}: bundle {bundle['path']} (parity checked); through onnxruntime success "
            f"{bundle['success_rate']:.2f} on {bundle['episodes']:.0f} episodes; a step that samples a chunk "
            f"takes {bundle['chunk_ms_p50']:.2f} ms (p99 {bundle['chunk_ms_p99']:.2f} ms), one thread"
        )
    return 0


def evaluate(
    targets: list[str],
    platform: str | None,
    episodes: int,
    mode: str,
    seed: int,
    duration_s: float,
    out_dir: Path,
) -> dict[str, dict[str, float]]:
    """Fly each target on the same seeded starts; write metrics.json, metrics.md and flights.png."""
    from robotrl.envs.quadrotor.env import QuadrotorEnvConfig
    from robotrl.envs.quadrotor.evaluation import HoverCriterion, fly, hover_metrics
    from robotrl.envs.quadrotor.plots import plot_flights
    from robotrl.envs.quadrotor.targets import TargetConfig

    resolved = [_resolve_target(t) for t in targets]
    platform = platform or next((p for _, _, p in resolved if p), None) or "crazyflie"
    env_config = QuadrotorEnvConfig(
        num_envs=episodes, platform=platform, seed=seed, target=TargetConfig(mode=mode)
    )
    criterion = HoverCriterion(episode_s=duration_s)
    logs, metrics = {}, {}
    for label, controller, _ in resolved:
        if controller is None:
            controller = _geometric(platform, env_config.dt)
        start = time.perf_counter()
        logs[label] = fly(controller, env_config, duration_s)  # type: ignore[arg-type]
        metrics[label] = hover_metrics(logs[label], criterion)
        metrics[label]["eval_wall_s"] = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "metrics.md").write_text(_markdown_table(metrics, platform, mode, episodes))
    plot_flights(logs, out_dir / "flights.png", criterion)
    return metrics


def _is_jump_run(path: Path) -> bool:
    config = path / "config.yaml"
    return config.is_file() and "stages" in (load_yaml(config) or {})


def _is_jump_target(path: Path) -> bool:
    if _is_jump_run(path):
        return True
    manifest = path / "policy.yaml"
    return manifest.is_file() and (load_yaml(manifest) or {}).get("task") == "quadruped_jump"


def _eval_jump(args: argparse.Namespace) -> int:
    """`eval JUMP_RUN_OR_BUNDLE [--sim pybullet] [--randomised] [--obstacles H,...]`: the bundle's jumps
    in MuJoCo (and pybullet, on MuJoCo robots with the training's domain randomisation, over boxes)."""
    from robotrl.recipes.quadruped_jump_report import RANDOMISED, bundle_config, write_report

    target = Path(args.target)
    run_dir = target if _is_jump_run(target) else None
    bundle = target / "bundle" if run_dir is not None else target
    if not (bundle / "policy.yaml").is_file():
        raise ConfigError(f"{target} has no bundle yet: run `robotrl export {target}` first")
    sims = ("mujoco",) if args.sim == "mujoco" else ("mujoco", args.sim)
    if args.randomised:
        sims = (*sims, RANDOMISED)
    distances = bundle_config(bundle).eval.forward_distances_m
    if args.distances is not None:
        distances = tuple(float(d) for d in args.distances.split(","))
    out_dir = Path(args.out or target / "eval_jump")
    episodes = 64 if args.episodes is None else args.episodes
    heights = () if args.obstacles is None else tuple(float(h) for h in args.obstacles.split(","))
    write_report(bundle, out_dir, distances, episodes, sims, run_dir, heights, seed=args.seed)
    print((out_dir / "results.md").read_text())
    print(f"wrote {out_dir / 'results.md'}, {out_dir / 'results.json'}" + (", curves.png" if run_dir else ""))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    is_jump = args.sim is not None or _is_jump_target(Path(args.target))
    for flag, given in (("--randomised", args.randomised), ("--obstacles", args.obstacles is not None)):
        if given and not is_jump:
            raise ConfigError(f"{flag} is for quadruped-jump runs and bundles; {args.target} is neither")
    if args.suite == "manipulation":
        return _eval_manipulation(args)
    if is_jump:
        return _eval_jump(args)
    if args.suite:
        return _eval_suite(args)
    targets = [args.target] + (["geometric"] if args.baseline and args.target != "geometric" else [])
    out_dir = Path(
        args.out or (Path(args.target) / "eval" if args.target != "geometric" else "runs/eval-geometric")
    )
    episodes = 256 if args.episodes is None else args.episodes
    seed = EVAL_SEED if args.seed is None else args.seed
    metrics = evaluate(targets, args.platform, episodes, args.mode, seed, args.duration, out_dir)
    _print_metrics(metrics)
    print(f"wrote {out_dir / 'metrics.md'}, {out_dir / 'metrics.json'}, {out_dir / 'flights.png'}")
    return 0


def _eval_manipulation(args: argparse.Namespace) -> int:
    """`eval RUN --suite manipulation`: the run's base, ResiP and DSRL on the same seeded episodes."""
    from robotrl.recipes import manipulation as m
    from robotrl.recipes.manipulation_config import load_run_config

    run_dir = Path(args.target)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(
            f"{run_dir} is not a manipulation run (no config.yaml); train one with `robotrl train diffusion`"
        )
    m.write_report(load_run_config(run_dir), run_dir)
    print((run_dir / "results.md").read_text())
    print(f"wrote {run_dir / 'results.md'}, {run_dir / 'results.json'}, {run_dir / 'curves.png'}")
    return 0


def _is_raptor_run(path: Path) -> bool:
    from robotrl.recipes.raptor_farm import TEACHERS_FILE

    return (path / TEACHERS_FILE).is_file() and (path / "bundle" / "policy.yaml").is_file()


def _eval_suite(args: argparse.Namespace) -> int:
    """`eval --suite raptor`: the target is the student (robotrl.recipes.raptor_suite)."""
    from robotrl.envs.quadrotor.raptor_suite import SuiteConfig
    from robotrl.recipes.raptor_report import print_report
    from robotrl.recipes.raptor_suite import run_raptor_suite

    _, student, _ = _resolve_target(args.target)  # None for 'geometric': the baselines alone
    default_out = (
        Path(args.target) / "eval_raptor" if args.target != "geometric" else Path("runs/eval-raptor")
    )
    out_dir = Path(args.out) if args.out else default_out
    config = SuiteConfig(
        episodes_per_quadrotor=8 if args.episodes is None else args.episodes,
        seed=EVAL_SEED if args.seed is None else args.seed,
    )
    teachers = Path(args.teachers) if args.teachers else None
    if teachers is None and _is_raptor_run(Path(args.target)):
        teachers = Path(args.target)  # a raptor run: its student and its own teachers
    report = run_raptor_suite(out_dir, student, teachers, args.quadrotors, config)  # type: ignore[arg-type]
    print_report(report)
    print("wrote " + ", ".join(str(out_dir / name) for name in report["files"]))
    return 0


DEMO_DEPLOYMENT = "configs/deploy/quadrotor_sim.yaml"


def _ros_defaults() -> None:
    """Keep the graph on this machine unless the user chose otherwise (no talking to the lab's network)."""
    import os

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def cmd_deploy(args: argparse.Namespace) -> int:
    """Start the graph of a deployment YAML: composed in this process, or one process a node. A quadruped
    graph run composed jumps once after arming and writes a report."""
    from robotrl.deployment import QuadrupedDeploymentConfig, load_deployment, node_list

    _ros_defaults()
    config = load_deployment(args.config, args.bundle, list(args.set))
    specs = node_list(config)
    print("nodes: " + ", ".join(f"{s.name} ({s.executable})" for s in specs))
    if isinstance(config, QuadrupedDeploymentConfig) and not args.processes:
        return _deploy_jump(config, args)
    if args.processes:
        from robotrl_ros.graph import spawn_processes

        processes = spawn_processes(specs)
        try:
            deadline = time.monotonic() + (args.duration or float("inf"))
            while time.monotonic() < deadline and all(p.poll() is None for p in processes):
                time.sleep(0.2)
        finally:
            for p in processes:
                p.terminate()
            codes = [p.wait(timeout=10) for p in processes]
        failed = [f"{s.name} exited {c}" for s, c in zip(specs, codes, strict=True) if c not in (0, -15)]
        if failed:
            print("; ".join(failed), file=sys.stderr)
        return 1 if failed else 0
    from robotrl_ros.graph import ComposedGraph

    with ComposedGraph(specs) as graph:
        print("running; Ctrl-C to stop" if not args.duration else f"running for {args.duration:.0f} s")
        graph.spin_for(args.duration or float("inf"))
        bridge = graph.nodes["bridge"]
        print(json.dumps(bridge.stats.summary(), indent=2))  # type: ignore[attr-defined]
    return 0


def _deploy_jump(config: QuadrupedDeploymentConfig, args: argparse.Namespace) -> int:
    """Run a quadruped deployment's graph, jump once, write the report; 1 when it did not arm or the safety
    chain fell back."""
    from robotrl.deployment import node_list
    from robotrl_ros.jump import run_jump

    duration = args.duration or float("inf")
    print(f"running; jumping {args.jump_after:g} s after arming, " + (
        f"for {duration:g} s after arming" if args.duration else "until Ctrl-C"))  # fmt: skip
    report = run_jump(node_list(config), duration, args.jump_after)
    out = Path(args.report or f"runs/deploy/{config.name}/report.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"report: {out}")
    if not report["armed"]:
        print(f"the graph did not arm: {report['arm_refusal']}", file=sys.stderr)
        return 1
    if report["fallbacks"]:
        print(f"the safety chain fell back: {report['first_fault']}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a small hover policy (or reuse a finished one), export it, fly it and the baseline, report."""
    from robotrl.recipes.quadrotor import export_run, load_config, train

    root = Path(args.out)
    run_dir, bundle_dir = root / "train", root / "bundle"
    summary_path = run_dir / "summary.json"
    if summary_path.is_file() and json.loads(summary_path.read_text()).get("criterion_met"):
        print(f"reusing the trained policy in {run_dir}")
    else:
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        config = load_config(None, [f"env.platform={args.platform}"])
        print(f"1/4 training a hover policy for {args.platform} in {run_dir} ...")
        summary = train(config, run_dir, progress=not args.no_progress)
        print(f"    {summary['env_steps']:,} env steps in {summary['train_wall_s']:.1f} s")
    if not (bundle_dir / "policy.yaml").is_file():
        print(f"2/4 exporting the bundle to {bundle_dir} ...")
        export_run(run_dir, bundle_dir)
    print("3/4 flying the bundle (onnxruntime) and the geometric baseline on the same starts ...")
    for mode in ("hover", "figure8"):
        metrics = evaluate(
            [str(bundle_dir), "geometric"], args.platform, 256, mode, EVAL_SEED, 10.0, root / f"eval_{mode}"
        )
        print(f"\n{mode}:")
        _print_metrics(metrics)
    print(f"\n4/4 flying a {args.ros_seconds:.0f} s figure-8 through the ROS 2 graph (simulator bridge, "
          "safety chain) and without ROS ...")  # fmt: skip
    from robotrl.deployment import load_deployment
    from robotrl_ros.flight import fly_and_compare

    _ros_defaults()
    deployment = load_deployment(DEMO_DEPLOYMENT, str(bundle_dir.resolve()))
    ros = fly_and_compare(deployment, args.ros_seconds, root / "ros")
    print(
        f"    tracking RMSE: ROS 2 graph {ros['ros_rmse_m']:.3f} m, direct {ros['direct_rmse_m']:.3f} m "
        f"(ratio {ros['rmse_ratio']:.2f})\n"
        f"    missed deadlines: {ros['missed_deadlines']:.0f} of {ros['ticks']:.0f} periods "
        f"({100 * ros['missed_fraction']:.2f}%)\n"
        f"    state -> filtered motor command: p50 {ros['latency_ms_p50']:.2f} ms, "
        f"p99 {ros['latency_ms_p99']:.2f} ms; safety mode at the end: {ros['safety_mode']}"
    )
    plots = [
        root / "eval_hover" / "flights.png",
        root / "eval_figure8" / "flights.png",
        root / "ros" / "ros_flight.png",
    ]
    print("\nplots: " + ", ".join(map(str, plots)))
    if ros["safety_mode"] != "POLICY":
        print(f"the safety chain took over during the ROS 2 flight: {ros['first_fault']}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------------ output
_COLUMNS = (
    ("success_rate", "success", "{:.3f}"),
    ("position_rmse_m", "RMSE last 5 s [m]", "{:.4f}"),
    ("position_rmse_median_m", "median ep. RMSE [m]", "{:.4f}"),
    ("settle_time_median_s", "settle [s]", "{:.2f}"),
    ("crashes", "crashes", "{:.0f}"),
    ("criterion_met", "met", "{:.0f}"),
)


def _metric_rows(metrics: dict[str, dict[str, float]]) -> tuple[list[str], list[list[str]]]:
    headers = ["controller"] + [title for _, title, _ in _COLUMNS]
    rows = [
        [name] + [fmt.format(m.get(key, float("nan"))) for key, _, fmt in _COLUMNS]
        for name, m in metrics.items()
    ]
    return headers, rows


def _markdown_table(metrics: dict[str, dict[str, float]], platform: str, mode: str, episodes: int) -> str:
    return (
        f"{episodes} episodes, platform {platform}, target {mode}\n\n"
        + markdown_table(*_metric_rows(metrics))
        + "\n"
    )


def _print_metrics(metrics: dict[str, dict[str, float]]) -> None:
    from rich.console import Console

    Console().print(rich_table(*_metric_rows(metrics)))


# ------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robotrl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a policy in batched simulation")
    train.add_argument(
        "task",
        choices=["quadrotor", "raptor", *MANIPULATION_STAGES, "quadruped-jump"],
        help="quadrotor: one policy for one platform; raptor: teacher farm + recurrent foundation student; "
        "diffusion: Meta-World demos + diffusion BC; resip / dsrl: RL over that frozen diffusion policy; "
        "quadruped-jump: A1 jumps in MuJoCo, in place then forward",
    )
    train.add_argument(
        "--config",
        help="training YAML (default: configs/train/quadrotor_hover.yaml or configs/train/raptor.yaml)",
    )
    train.add_argument("--platform", help="named platform in sim/quadrotor/, a platform .yaml, or 'raptor'")
    train.add_argument(
        "--run-dir", help="where the run lives (default: runs/quadrotor-<platform>-s<seed>-<time>)"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint"
    )
    train.add_argument("--num-envs", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--threads", type=int, help="torch threads (default from the config)")
    train.add_argument("--max-iterations", type=int, help="PPO iterations (raptor: of every teacher group)")
    train.add_argument("--teachers", type=int, help="raptor: number of teachers (sampled quadrotors)")
    train.add_argument(
        "--backend", choices=["local", "ray"], help="raptor: train teacher groups here or on Ray"
    )
    train.add_argument("--address", help="raptor with --backend ray: address of a running Ray cluster")
    train.add_argument(
        "--task", dest="env_task", help="diffusion/resip/dsrl: a Meta-World task, e.g. assembly-v3"
    )
    train.add_argument("--variant", choices=["sac", "na"], help="dsrl: DSRL-SAC or noise-aliased DSRL-NA")
    train.add_argument(
        "--stage", choices=["upward", "forward", "obstacle"],
        help="quadruped-jump: train the stages up to this one (those not done yet; default: the config's)",
    )  # fmt: skip
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override, e.g. ppo.learning_rate=3e-4",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar (for logs and CI)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="fly a run, a bundle or the geometric baseline and score it")
    ev.add_argument(
        "target", help="a run directory (a raptor run: its student), a bundle directory, or 'geometric'"
    )
    ev.add_argument(
        "--baseline", action="store_true", help="also fly the geometric baseline on the same starts"
    )
    ev.add_argument("--platform", help="platform to fly (default: the one the policy was trained on)")
    ev.add_argument(
        "--episodes", type=int, help="episodes (default 256); with --suite: per quadrotor (default 8)"
    )
    ev.add_argument("--mode", choices=["hover", "waypoints", "figure8"], default="hover")
    ev.add_argument(
        "--seed",
        type=int,
        help=f"seed of the starts (default {EVAL_SEED}; quadruped-jump: the bundle's eval.seed)",
    )
    ev.add_argument("--duration", type=float, default=10.0, help="episode length [s]")
    ev.add_argument("--out", help="output directory (default: TARGET/eval, with --suite TARGET/eval_raptor)")
    ev.add_argument(
        "--suite", choices=["raptor", "manipulation"],
        help="fly an evaluation suite instead (raptor: held-out and named quadrotors; hover, step, figure-8, "
        "mass, rotor and gust changes; vs. the geometric baseline and the official RAPTOR checkpoint. "
        "manipulation: a `train diffusion/resip/dsrl` run's policies on the same seeded episodes)",
    )  # fmt: skip
    ev.add_argument(
        "--sim", choices=["mujoco", "pybullet"],
        help="quadruped-jump run or bundle: also replay the bundle in pybullet (sim-to-sim) or MuJoCo only",
    )  # fmt: skip
    ev.add_argument(
        "--distances", help="quadruped-jump: forward landings [m], comma-separated (default from the config)"
    )
    ev.add_argument(
        "--obstacles", metavar="HEIGHTS",
        help="quadruped-jump: also jump over boxes of these heights [m], comma-separated (MuJoCo)",
    )  # fmt: skip
    ev.add_argument(
        "--randomised", action="store_true",
        help="quadruped-jump: also jump MuJoCo robots with the training's domain randomisation (robustness)",
    )  # fmt: skip
    ev.add_argument("--teachers", help="with --suite raptor: a raptor run; also fly its training quadrotors")
    ev.add_argument("--quadrotors", type=int, default=100, help="with --suite raptor: held-out quadrotors")
    ev.set_defaults(func=cmd_eval)

    ex = sub.add_parser("export", help="write a policy bundle (ONNX + TorchScript + policy.yaml) from a run")
    ex.add_argument("run", help="training run directory")
    ex.add_argument(
        "--out", help="bundle directory to create (must not exist); a manipulation run: RUN/bundles/STAGE"
    )
    ex.add_argument(
        "--stage", choices=["resip", "dsrl-sac", "dsrl-na"],
        help="manipulation run: the RL stage to export (default: every finished one)",
    )  # fmt: skip
    ex.add_argument(
        "--iteration", type=int,
        help="quadruped-jump run: export the last stage's checkpoint of this iteration (default: its latest)",
    )  # fmt: skip
    ex.set_defaults(func=cmd_export)

    demos = sub.add_parser("demos", help="record scripted-expert demonstrations of a Meta-World task")
    demos.add_argument("action", choices=["collect", "tasks"], help="collect: record; tasks: list task names")
    demos.add_argument("--task", default="assembly-v3")
    demos.add_argument("--episodes", type=int, default=50)
    demos.add_argument("--noise", type=float, default=0.3, help="std of the noise on executed actions")
    demos.add_argument(
        "--perturb", type=float, default=0.0, help="chance of a random-action burst an episode"
    )
    demos.add_argument("--keep", choices=["successes", "all"], default="successes")
    demos.add_argument("--num-envs", type=int, default=16)
    demos.add_argument("--seed", type=int, default=0)
    demos.add_argument("--out", help="dataset .npz (default runs/demos/TASK-EPISODES.npz)")
    demos.add_argument("--no-progress", action="store_true")
    demos.set_defaults(func=cmd_demos)

    demo = sub.add_parser("demo", help="train (or reuse), export, fly and report: the main job")
    demo.add_argument("--out", default="runs/demo", help="where the demo keeps its run, bundle and plots")
    demo.add_argument("--platform", default="crazyflie")
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--ros-seconds", type=float, default=20.0, help="figure-8 flight through ROS 2 [s]")
    demo.set_defaults(func=cmd_demo)

    dep = sub.add_parser("deploy", help="start the ROS 2 graph of a deployment YAML")
    dep.add_argument("config", help="deployment YAML, e.g. configs/deploy/quadrotor_sim.yaml")
    dep.add_argument("--bundle", help="policy bundle to fly (overrides the YAML's)")
    dep.add_argument("--processes", action="store_true", help="one process a node instead of one for all")
    dep.add_argument(
        "--duration",
        type=float,
        help="stop after this many seconds (quadruped: from arming; default: Ctrl-C)",
    )
    dep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a YAML key")
    dep.add_argument(
        "--jump-after", type=float, default=1.0, metavar="S",
        help="quadruped: trigger the jump this many seconds after arming (default 1)",
    )  # fmt: skip
    dep.add_argument(
        "--report", metavar="PATH", help="quadruped: the report JSON (default runs/deploy/<name>/report.json)"
    )
    dep.set_defaults(func=cmd_deploy)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, a closed session) unwinds a training like Ctrl-C: its stages keep their time."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    # Only training: the ROS 2 commands leave SIGTERM to rclpy's own shutdown.
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if args.command == "train" else None
    try:
        return int(args.func(args))
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, BundleError, RuntimeError) as exc:
        print(f"robotrl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{how}; the last checkpoint is kept (resume with --resume)", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
