"""Meta-World batched env, demos, the residual wrapper and the whole diffusion -> ResiP / DSRL pipeline on a
tiny budget: chunks stop at the end of an episode, a zero residual is the base, the base stays frozen, the
exported bundles replay what was trained through onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robotrl.envs.manipulation.demos import DemoConfig, DemoDataset, collect_demos
from robotrl.envs.manipulation.metaworld_env import MetaWorldConfig, MetaWorldVecEnv
from robotrl.policies.diffusion import DiffusionConfig, DiffusionPolicy
from robotrl.wrappers.latent_noise import LatentNoiseEnv
from robotrl.wrappers.residual import ResidualEnv

TASK = "reach-v3"  # the quickest expert; the pipeline is task-agnostic


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def env() -> MetaWorldVecEnv:
    with MetaWorldVecEnv(MetaWorldConfig(TASK, num_envs=4, workers=2, max_episode_steps=30)) as e:
        yield e


def test_seeded_resets_repeat_and_chunks_stop_where_episodes_end(env: MetaWorldVecEnv) -> None:
    first, again = env.reset(seed=3), env.reset(seed=3)
    assert torch.equal(first, again)
    assert not torch.equal(first, env.reset(seed=4))  # another seed, other goals
    env.reset(seed=3)
    steps = torch.zeros(4, dtype=torch.long)
    ended = torch.zeros(4, dtype=torch.bool)
    while not ended.all():  # random actions never reach the goal: every episode ends at the time limit
        _, reward, terminated, truncated, info = env.step_chunk(torch.zeros(4, 7, 4))
        steps += info["steps"]
        ended |= truncated
        assert (info["steps"] <= 7).all()
    assert (steps == 30).all()  # 4 chunks of 7 and one of 2: no step ran into the next episode
    assert not terminated.any() and reward.sum() == 0


def test_bad_actions_are_refused_with_the_reason(env: MetaWorldVecEnv) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4, 4\)"):
        env.step(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="non-finite actions for envs \\[2\\]"):
        actions = torch.zeros(4, 4)
        actions[2, 1] = float("nan")
        env.step(actions)


def test_an_unknown_task_names_the_close_ones() -> None:
    with pytest.raises(ValueError, match=r"did you mean.*peg-insert-side-v3"):
        MetaWorldVecEnv(MetaWorldConfig("peg-insert-v3", num_envs=1, workers=1))


def test_demos_keep_the_expert_label_beside_the_noisy_executed_action(tmp_path: Path) -> None:
    config = DemoConfig(task=TASK, episodes=4, noise_std=0.2, num_envs=2, workers=1, max_episode_steps=100)
    dataset = collect_demos(config, progress=False)
    assert dataset.num_episodes == 4 and dataset.success.all()
    noise = dataset.executed - dataset.actions
    assert 0.1 < noise[np.abs(dataset.actions) < 0.7].std() < 0.3  # the executed noise, where not clipped
    loaded = DemoDataset.load(dataset.save(tmp_path / "demos.npz"))
    assert np.array_equal(loaded.obs, dataset.obs) and loaded.meta["task"] == TASK
    (tmp_path / "broken.npz").write_bytes(b"not a dataset")
    with pytest.raises(ValueError, match="not a robotrl demo dataset"):
        DemoDataset.load(tmp_path / "broken.npz")


def small_base(seed: int = 0) -> DiffusionPolicy:
    torch.manual_seed(seed)
    config = DiffusionConfig(prediction_horizon=4, action_horizon=2, inference_steps=3, hidden=32, layers=2)
    return DiffusionPolicy(39, 4, config).eval()


def test_a_zero_residual_executes_exactly_the_base_chunks(env: MetaWorldVecEnv) -> None:
    base = small_base()
    wrapped = ResidualEnv(env, base, scale=0.1, seed=5)
    obs = wrapped.reset(seed=1)
    replay = torch.Generator().manual_seed(5)  # the wrapper's noise stream
    chunk = base.sample(obs[:, :39], torch.randn(4, 4, 4, generator=replay))
    for step in range(6):
        j = step % base.action_horizon
        if step and j == 0:
            chunk = base.sample(obs[:, :39], torch.randn(4, 4, 4, generator=replay))
        torch.testing.assert_close(obs[:, 39:], chunk[:, j])  # the residual sees the base action
        obs, _, _, _, info = wrapped.step(torch.zeros(4, 4))
        torch.testing.assert_close(info["executed_actions"], chunk[:, j].clamp(-1, 1))


def test_the_latent_wrapper_maps_the_same_noise_to_the_same_actions(env: MetaWorldVecEnv) -> None:
    latent = LatentNoiseEnv(env, small_base(1), noise_bound=1.5)
    obs = latent.reset(seed=2)
    noise = torch.randn(4, latent.action_dim)
    assert torch.equal(latent.decode(obs, noise), latent.decode(obs.clone(), noise.clone()))
    assert torch.equal(latent.decode(obs, 5.0 * noise), latent.decode(obs, (5.0 * noise).clamp(-1.5, 1.5)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole pipeline through the CLI on a tiny budget: demos, BC, ResiP, DSRL-NA, bundles."""
    from robotrl.cli import main

    run = tmp_path_factory.mktemp("manip") / "run"
    common = [
        "--run-dir", str(run), "--task", TASK, "--no-progress",
        "--set", "demos.episodes=6", "--set", "demos.noise_std=0.1", "--set", "env.num_envs=4",
        "--set", "env.max_episode_steps=60", "--set", "bc.iterations=150", "--set", "bc.warmup_iterations=10",
        "--set", "diffusion.hidden=64", "--set", "diffusion.layers=2", "--set", "eval_episodes=8",
        "--set", "resip.num_envs=4", "--set", "resip.iterations=2", "--set", "resip.eval_every=0",
        "--set", "resip.ppo.num_steps=30", "--set", "resip.ppo.num_epochs=2",
        "--set", "dsrl.num_envs=4", "--set", "dsrl.total_env_steps=400", "--set", "dsrl.eval_every=200",
        "--set", "dsrl.sac.warmup_steps=40", "--set", "dsrl.sac.hidden=[32,32]",
    ]  # fmt: skip
    assert main(["train", "resip", *common]) == 0
    assert main(["train", "dsrl", "--variant", "na", *common]) == 0
    return run


def test_rl_leaves_the_base_policy_frozen(tiny_run: Path) -> None:
    from robotrl.recipes.manipulation import load_base, weights_sha256

    base_sha = json.loads((tiny_run / "base" / "result.json").read_text())["base_sha256"]
    for stage in ("resip", "dsrl-na"):
        result = json.loads((tiny_run / stage / "result.json").read_text())
        assert result["base_sha256_before"] == result["base_sha256_after"] == base_sha
        assert result["env_steps"] > 0
    base = load_base(tiny_run)
    assert weights_sha256(base) == base_sha
    with torch.no_grad():
        next(base.denoiser.parameters())[0, 0] += 1e-6
    assert weights_sha256(base) != base_sha  # the hash does see a changed weight


def test_the_report_lists_every_policy_with_its_cost(tiny_run: Path) -> None:
    table = (tiny_run / "results.md").read_text()
    for row in ("base (diffusion BC", "ResiP", "DSRL-NA"):
        assert row in table
    assert (tiny_run / "curves.png").stat().st_size > 10_000


@pytest.mark.parametrize("stage", ["resip", "dsrl-na"])
def test_exported_bundles_fly_through_onnxruntime(tiny_run: Path, stage: str) -> None:
    from robotrl.recipes.manipulation import chunk_latency, evaluate_bundle, export_stage
    from robotrl.recipes.manipulation_config import load_run_config
    from robotrl.runtime.policy_runner import PolicyRunner

    config = load_run_config(tiny_run)
    bundle = export_stage(config, tiny_run, stage)
    spec = PolicyRunner(bundle).spec.policy
    assert spec.chunking is not None and spec.chunking.in_graph
    assert [s.name for s in spec.sampled_inputs] == (["base_noise"] if stage == "resip" else [])
    result = evaluate_bundle(config, bundle, episodes=4)
    assert result["episodes"] == 4 and 0.0 <= result["success_rate"] <= 1.0
    assert chunk_latency(bundle, calls=40)["chunk_ms_p50"] < 50.0
