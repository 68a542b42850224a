"""Jump training end to end on tiny budgets: stages, resume, evaluation, export, the sim-to-sim report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from robotrl.algos.ppo import MIN_LEARNING_RATE, PPO
from robotrl.cli import main
from robotrl.config import ConfigError
from robotrl.envs.quadruped.curriculum import CurriculumConfig, JumpCurriculum
from robotrl.envs.quadruped.evaluation import jump_metrics
from robotrl.envs.quadruped.jump_env import QuadrupedJumpEnv, QuadrupedJumpEnvConfig
from robotrl.policies.mlp import ActorCritic
from robotrl.recipes import quadruped_jump_report
from robotrl.recipes.quadruped_jump import (
    build_policy,
    eval_env_config,
    export_run,
    load_config,
    load_run,
    train,
    unseen_inputs_start_ignored,
)
from robotrl.recipes.quadruped_jump_report import RANDOMISED, bundle_config, longest_jump, sim_to_sim
from robotrl.runtime.policy_runner import PolicyRunner

TINY = [
    "env.num_envs=64",
    "env.num_threads=1",
    "threads=1",
    "ppo.num_steps=8",
    "upward.max_iterations=2",
    "forward.max_iterations=2",
    "eval.every=2",
    "eval.episodes=8",
    "checkpoint_every=1",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("jump") / "run"
    train(load_config(None, TINY), run_dir, progress=False)
    return run_dir


def test_stages_train_in_order_and_forward_starts_from_upward(tiny_run: Path) -> None:
    upward = json.loads((tiny_run / "upward" / "summary.json").read_text())
    forward = json.loads((tiny_run / "forward" / "summary.json").read_text())
    assert upward["iterations"] == 2 and forward["iterations"] == 2
    assert set(forward["eval"]) >= {"success_rate", "apex_gain_m_mean", "upward_criterion_rate"}
    # The forward stage's first update starts from the upward stage's final weights.
    first = torch.load(tiny_run / "forward" / "checkpoints" / "iter_000001.pt", weights_only=False)
    final_up = torch.load(Path(upward["checkpoint"]), weights_only=False)
    w_up = final_up["ppo"]["policy"]["actor.0.weight"]
    w_fw = first["ppo"]["policy"]["actor.0.weight"]
    fresh = ActorCritic(
        57, 75, 12, actor_hidden=(256, 128, 64), critic_hidden=(256, 128, 64), activation="elu"
    )
    assert (w_fw - w_up).abs().max() < (w_fw - fresh.actor[0].weight).abs().max()


def test_a_bundles_actor_starts_its_learning_rate_at_the_floor(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle's trained actor under a fresh Adam: with no warm-up the stage restarts the adaptive rate
    at once (PPO.restart_learning_rate; tests/test_ppo.py shows why and the release after a warm-up)."""
    rates: list[float] = []
    restart = PPO.restart_learning_rate

    def spy(self: PPO) -> None:
        restart(self)
        rates.append(self.learning_rate)

    monkeypatch.setattr(PPO, "restart_learning_rate", spy)
    bundle = export_run(tiny_run, tmp_path / "bundle")
    overrides = [*TINY, "stages=[obstacle]", "obstacle.max_iterations=1", "eval.every=0"]
    train(
        load_config(None, [*overrides, f"obstacle.init_from_bundle={bundle}"]),
        tmp_path / "run",
        progress=False,
    )
    assert rates == [MIN_LEARNING_RATE]


def test_resume_continues_the_stage_and_restores_the_curriculum(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = load_config(None, [*TINY, "stages=[forward]", "forward.max_iterations=2"])
    train(config, run_dir, progress=False)
    path = run_dir / "forward" / "checkpoints" / "iter_000002.pt"
    state = torch.load(path, weights_only=False)
    # Levels no 8-step iteration can change (forward episodes last 4 s): they must come back on resume.
    state["env"]["curriculum"]["level"] = torch.arange(64) % 11
    torch.save(state, path)
    (run_dir / "forward" / "summary.json").unlink()  # as if the run had been killed after its checkpoint
    longer = load_config(run_dir / "config.yaml", ["forward.max_iterations=3"])
    summary = train(longer, run_dir, resume=True, progress=False)["forward"]
    assert summary["iterations"] == 3
    resumed = torch.load(run_dir / "forward" / "checkpoints" / "iter_000003.pt", weights_only=False)
    assert [h["iteration"] for h in resumed["history"]] == [1.0, 2.0, 3.0]
    assert torch.equal(resumed["env"]["curriculum"]["level"], torch.arange(64) % 11)


def test_a_new_run_refuses_a_used_directory(tiny_run: Path) -> None:
    with pytest.raises(ConfigError, match="not empty"):
        train(load_config(None, TINY), tiny_run, progress=False)


def test_the_deterministic_actor_keeps_the_envs_action_range() -> None:
    policy = ActorCritic(4, 4, 2, action_clip=10.0)
    torch.nn.init.constant_(policy.actor[-1].bias, 5.0)
    assert (policy.deterministic_actor()(torch.zeros(3, 4)) > 4.9).all()
    assert ActorCritic(4, 4, 2).deterministic_actor().action_clip == 1.0


def test_a_fixed_landing_overrides_every_level() -> None:
    curriculum = JumpCurriculum(CurriculumConfig(stage="forward", fixed_landing_m=(0.5, 0.1)), 6)
    curriculum.level[:] = torch.arange(6)
    command = curriculum.sample(torch.arange(6), torch.Generator().manual_seed(0))
    assert torch.allclose(command[:, 0:2], torch.tensor([0.5, 0.1]).expand(6, 2))


def test_evaluation_scores_on_anchors_checks_whatever_margins_the_training_used() -> None:
    config = load_config(
        None, ["env.termination.max_post_landing_drift_m=0.06", "env.termination.max_landing_error_m=0.1"]
    )
    assert config.env.termination.max_post_landing_drift_m == 0.06
    termination = eval_env_config(config, (0.8, 0.0), "obstacle", 0.2).termination
    assert termination.max_post_landing_drift_m == 0.1
    assert termination.max_landing_error_m == 0.2


def test_jump_metrics_score_a_standing_robot_as_no_jump() -> None:
    env = QuadrupedJumpEnv(QuadrupedJumpEnvConfig(num_envs=4, num_threads=1, upward_episode_s=0.5))
    metrics = jump_metrics(lambda obs: torch.zeros(obs.shape[0], 12), env)
    env.close()
    assert metrics["success_rate"] == 0.0 and metrics["landed_rate"] == 0.0
    assert metrics["apex_gain_m_mean"] < 0.02


def test_export_writes_a_bundle_that_onnxruntime_runs_like_the_actor(tiny_run: Path, tmp_path: Path) -> None:
    bundle = export_run(tiny_run, tmp_path / "bundle")
    manifest = yaml.safe_load((bundle / "policy.yaml").read_text())
    assert manifest["task"] == "quadruped_jump" and manifest["control_rate_hz"] == 50.0
    _, policy = load_run(tiny_run)
    obs = torch.randn(5, 57)
    runner = PolicyRunner(bundle)
    runner.reset(5)
    expected = policy.deterministic_actor()(obs).detach().numpy()
    assert abs(runner.step(obs.numpy()) - expected).max() < 1e-4


def test_export_takes_a_named_iteration_and_records_which(tiny_run: Path, tmp_path: Path) -> None:
    bundle = export_run(tiny_run, tmp_path / "bundle", iteration=1)
    provenance = yaml.safe_load((bundle / "policy.yaml").read_text())["provenance"]
    assert provenance["metrics"]["exported_checkpoint"] == "forward/iter_000001.pt"
    first = load_run(tiny_run, iteration=1)[1].deterministic_actor()
    obs = torch.randn(3, 57)
    runner = PolicyRunner(bundle)
    runner.reset(3)
    assert abs(runner.step(obs.numpy()) - first(obs).detach().numpy()).max() < 1e-4
    assert abs(first(obs) - load_run(tiny_run)[1].deterministic_actor()(obs)).max() > 1e-6
    with pytest.raises(ConfigError, match=r"no checkpoint of iteration 7; kept: \[1, 2\]"):
        export_run(tiny_run, tmp_path / "missing", iteration=7)


def test_sim_to_sim_scores_the_bundle_in_both_simulators(tiny_run: Path, tmp_path: Path) -> None:
    bundle = export_run(tiny_run, tmp_path / "bundle")
    results = sim_to_sim(bundle, bundle_config(bundle), [(0.0, 0.0)], episodes=2)
    assert set(results) == {"mujoco", "pybullet"}
    for metrics in (r["0.00,0.00"] for r in results.values()):
        assert metrics["episodes"] == 2 and 0.0 <= metrics["success_rate"] <= 1.0


def test_eval_adds_randomised_robots_and_jumps_over_boxes(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, out = export_run(tiny_run, tmp_path / "bundle"), tmp_path / "eval"
    built: list[QuadrupedJumpEnvConfig] = []

    def recording_env(config: QuadrupedJumpEnvConfig) -> QuadrupedJumpEnv:
        built.append(config)
        return QuadrupedJumpEnv(config)

    seeds: list[int] = []

    def recording_metrics(*args: object, seed: int, **kwargs: object) -> dict[str, float]:
        seeds.append(seed)
        return jump_metrics(*args, seed=seed, **kwargs)

    monkeypatch.setattr(quadruped_jump_report, "QuadrupedJumpEnv", recording_env)
    monkeypatch.setattr(quadruped_jump_report, "jump_metrics", recording_metrics)
    args = ["--sim", "mujoco", "--randomised", "--distances", "0.5", "--episodes", "3", "--out", str(out)]
    assert main(["eval", str(bundle), *args, "--obstacles", "0.15", "--seed", "7"]) == 0
    assert seeds and set(seeds) == {7}, "--seed draws the starts of every jump"
    report = json.loads((out / "results.json").read_text())
    assert list(report["results"]) == ["mujoco", RANDOMISED]
    assert {k: list(v) for k, v in report["over_obstacles"].items()} == {
        "mujoco": ["0.15"],
        RANDOMISED: ["0.15"],
    }
    markdown = (out / "results.md").read_text()
    assert f"{RANDOMISED} success" in markdown and "| 0.15 |" in markdown and "(starts seed 7)" in markdown
    # In place and 0.5 m, nominal then randomised; then the jump over the box, the same two ways.
    assert [c.randomisation.enabled for c in built] == [False, False, True, True, False, True]
    assert all(c.simulator == "mujoco" and c.num_envs == 3 for c in built)
    trained = load_run(tiny_run)[0].env.randomisation
    assert built[3].randomisation.added_mass_kg == trained.added_mass_kg
    assert built[3].randomisation.action_delay_steps == trained.action_delay_steps
    for boxes in (built[4].curriculum, built[5].curriculum):
        assert boxes.stage == "obstacle" and boxes.fixed_obstacle_height_m == 0.15
        assert boxes.upward_fraction == 0.0 and boxes.fixed_landing_m == (0.8, 0.0)


def test_eval_refuses_jump_options_for_a_quadrotor_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "geometric", "--randomised"]) == 2
    assert "--randomised is for quadruped-jump" in capsys.readouterr().err
    assert main(["eval", "geometric", "--obstacles", "0.1"]) == 2
    assert "--obstacles is for quadruped-jump" in capsys.readouterr().err


def test_longest_jump_is_the_farthest_landing_at_half_success() -> None:
    results = {
        "0.30,0.00": {"success_rate": 0.9},
        "0.50,0.00": {"success_rate": 0.5},
        "0.70,0.00": {"success_rate": 0.2},
    }
    assert longest_jump(results) == 0.5
    assert longest_jump({"0.30,0.00": {"success_rate": 0.1}}) == 0.0


def test_eval_refuses_a_bundle_of_another_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({"task": "quadrotor_hover"}))
    assert main(["eval", str(tmp_path), "--sim", "pybullet"]) == 2
    assert "needs a quadruped_jump bundle" in capsys.readouterr().err


def test_learning_raises_the_jump_within_a_few_iterations(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            "env.num_envs=256",
            "stages=[upward]",
            "upward.max_iterations=12",
            "eval.every=0",
            "checkpoint_every=12",
        ],
    )
    train(config, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "upward" / "checkpoints" / "iter_000012.pt", weights_only=False)
    gains = [h["episode/apex_gain_m_mean"] for h in state["history"] if "episode/apex_gain_m_mean" in h]
    assert gains[-1] > gains[0] + 0.01, gains


def test_a_new_stage_starts_blind_to_inputs_the_previous_one_held_constant() -> None:
    policy = build_policy(load_config(None, TINY))
    seen = torch.randn(4096, 57)
    seen[:, 40:50] = 0.0  # e.g. the landing command and the box of in-place jumps
    policy.obs_normalizer.update(seen)
    policy.privileged_normalizer.update(torch.cat((seen, torch.randn(4096, 18)), dim=-1))
    actor = policy.deterministic_actor()
    boxes = torch.randn(8, 57)
    blind = boxes.clone()
    blind[:, 40:50] = 0.0
    assert policy.obs_normalizer(boxes)[:, 40:50].abs().max() == 10.0, "variance 0: any value hits the clip"
    assert (actor(boxes) - actor(blind)).abs().max() > 1e-3
    before = actor(blind).detach()
    unseen = unseen_inputs_start_ignored(policy)
    assert unseen == {"actor": list(range(40, 50)), "critic": list(range(40, 50))}
    assert torch.allclose(actor(boxes), before, atol=1e-5), "the previous behaviour, whatever the new inputs"
    assert torch.allclose(policy.obs_normalizer(boxes)[:, 40:50], boxes[:, 40:50], rtol=1e-3), "unit scale"
    assert (policy.critic[0].weight[:, 40:50] == 0).all() and (policy.critic[0].weight[:, :40] != 0).any()


def test_a_stage_can_start_with_less_exploration_than_the_previous_one_ended(tmp_path: Path) -> None:
    overrides = [*TINY, "upward.max_iterations=1", "forward.max_iterations=1", "forward.start_action_std=0.3"]
    train(load_config(None, overrides), tmp_path / "run", progress=False)

    def std(stage: str) -> torch.Tensor:
        checkpoint = torch.load(
            tmp_path / "run" / stage / "checkpoints" / "iter_000001.pt", weights_only=False
        )
        return checkpoint["ppo"]["policy"]["log_std"].exp()

    assert (std("upward") > 0.9).all(), "the upward stage keeps the configured initial std (1.0)"
    assert torch.allclose(std("forward"), torch.tensor(0.3), atol=0.02), "one update away from 0.3"
    with pytest.raises(ValueError, match="start_action_std"):
        load_config(None, ["forward.start_action_std=0"])


def test_a_stage_starts_from_a_bundle_with_the_actor_held_while_its_fresh_critic_warms_up(
    tiny_run: Path, tmp_path: Path
) -> None:
    bundle = export_run(tiny_run, tmp_path / "bundle")
    overrides = [*TINY, "stages=[obstacle]", "obstacle.max_iterations=2", "eval.every=0"]
    start = [f"obstacle.init_from_bundle={bundle}", "obstacle.critic_warmup_iterations=1"]
    train(load_config(None, [*overrides, *start]), tmp_path / "run", progress=False)
    exported = torch.jit.load(str(bundle / "policy.pt")).state_dict()

    def policy(iteration: int) -> dict[str, torch.Tensor]:
        path = tmp_path / "run" / "obstacle" / "checkpoints" / f"iter_{iteration:06d}.pt"
        return torch.load(path, weights_only=False)["ppo"]["policy"]

    held, trained = policy(1), policy(2)
    for key in ("actor.2.weight", "actor.6.bias", "obs_normalizer.mean", "obs_normalizer.var"):
        assert torch.equal(held[key], exported[key]), f"{key}: the bundle's, held through the warm-up"
        assert key.startswith("obs") or not torch.equal(trained[key], exported[key]), "then it learns"
    # The box inputs, constant in the bundle's stages, start ignored as after any previous stage.
    assert (held["actor.0.weight"][:, 49:55] == 0).all()
    torch.manual_seed(0)  # the run's seed: the stage's critic started as this one
    fresh = build_policy(load_config(None, TINY)).state_dict()
    assert not torch.equal(held["critic.0.weight"], fresh["critic.0.weight"]), "the critic learnt"
    bad = tmp_path / "not-a-jump"
    export_run(tiny_run, bad)
    manifest = yaml.safe_load((bad / "policy.yaml").read_text())
    (bad / "policy.yaml").write_text(yaml.safe_dump({**manifest, "task": "quadrotor_hover"}))
    with pytest.raises(ConfigError, match="quadrotor_hover"):
        train(
            load_config(None, [*overrides, f"obstacle.init_from_bundle={bad}"]),
            tmp_path / "r2",
            progress=False,
        )


def test_the_obstacle_stage_trains_and_evaluates_over_boxes(tmp_path: Path) -> None:
    config = load_config(None, [*TINY, "stages=[obstacle]", "obstacle.max_iterations=1", "eval.every=1"])
    summary = train(config, tmp_path / "run", progress=False)["obstacle"]
    assert summary["iterations"] == 1 and summary["eval"]["episodes"] == 8


def test_start_pose_noise_makes_episodes_differ_and_repeats_with_the_seed() -> None:
    def first_joints(simulator: str) -> torch.Tensor:
        config = QuadrupedJumpEnvConfig(
            num_envs=3, num_threads=1, init_joint_noise_rad=0.05, simulator=simulator
        )
        env = QuadrupedJumpEnv(config)
        env.reset(seed=7)
        obs, *_ = env.step(torch.zeros(3, 12))
        env.close()
        return obs[:, 6:18]

    mujoco = first_joints("mujoco")
    assert (mujoco[0] - mujoco[1]).abs().max() > 0.01, "each episode starts from its own pose"
    assert torch.allclose(first_joints("mujoco"), mujoco)
    assert (first_joints("pybullet") - mujoco).abs().max() < 0.05, "the same starts in both simulators"
