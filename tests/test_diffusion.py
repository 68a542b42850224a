"""Diffusion policy: DDIM is deterministic in its noise and matches diffusers' DDIMScheduler step for step,
behaviour cloning drives the denoising loss down, and the chunked export graph replays the chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robotrl.algos.diffusion_bc import BCConfig, DiffusionBC, chunk_dataset, train_diffusion_bc
from robotrl.policies.chunked import ChunkedNoisePolicy, initial_chunk_state
from robotrl.policies.diffusion import DiffusionConfig, DiffusionPolicy, ddim_scheduler

SMALL = DiffusionConfig(prediction_horizon=4, action_horizon=2, inference_steps=5, hidden=64, layers=2)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def small_policy(seed: int = 0) -> DiffusionPolicy:
    torch.manual_seed(seed)
    return DiffusionPolicy(obs_dim=6, action_dim=3, config=SMALL).eval()


def test_ddim_is_deterministic_in_its_noise() -> None:
    policy = small_policy()
    obs = torch.randn(5, 6)
    noise = torch.randn(5, *policy.noise_shape)
    first, again = policy.sample(obs, noise), policy.sample(obs, noise.clone())
    assert torch.equal(first, again)
    assert first.shape == (5, 4, 3) and first.abs().max() <= 1.0
    other = policy.sample(obs, torch.randn(5, *policy.noise_shape))
    assert (other - first).abs().max() > 1e-3  # the noise steers the chunk


def test_ddim_matches_diffusers_scheduler_step_for_step() -> None:
    policy = small_policy(1)
    obs = torch.randn(3, 6)
    noise = torch.randn(3, *policy.noise_shape)
    scheduler = ddim_scheduler(SMALL.train_timesteps, SMALL.inference_steps)
    cond = policy.obs_normalizer(obs)
    x = noise.flatten(1)
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = policy.denoiser(x, cond, t.reshape(1))
            x = scheduler.step(eps, int(t), x, eta=0.0).prev_sample
    expected = policy.unnormalize_actions(x.view(3, 4, 3)).clamp(-1.0, 1.0)
    torch.testing.assert_close(policy.sample(obs, noise), expected, atol=1e-5, rtol=0.0)


def test_chunk_windows_pad_with_the_last_action_of_their_episode() -> None:
    actions = np.arange(10, dtype=np.float32).reshape(5, 2)
    obs = np.zeros((5, 3), np.float32)
    _, chunks = chunk_dataset(obs, actions, np.array([3, 5]), horizon=3)
    assert chunks[1, :, 0].tolist() == [2.0, 4.0, 4.0]  # episode 0 ends at step 2
    assert chunks[3, :, 0].tolist() == [6.0, 8.0, 8.0]  # episode 1 starts at step 3


def test_behaviour_cloning_on_a_tiny_dataset_drives_its_loss_down(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (400, 6)).astype(np.float32)
    actions = np.tanh(obs[:, :3] * 1.5).astype(np.float32)  # a smooth function of the observation
    ends = np.arange(20, 401, 20)
    config = BCConfig(
        iterations=400, batch_size=128, warmup_iterations=20, log_every=20, checkpoint_every=1000
    )
    policy, bc = train_diffusion_bc(obs, actions, ends, SMALL, config, tmp_path / "bc", progress=False)
    losses = [h["loss"] for h in bc.history]
    assert losses[-1] < 0.5 * losses[0], losses
    # And the trained sampler produces actions near the labels (the untrained one does not).
    chunk = policy.sample(torch.from_numpy(obs[:64]), torch.randn(64, *policy.noise_shape))
    error = (chunk[:, 0] - torch.from_numpy(actions[:64])).abs().mean().item()
    untrained = (small_policy().sample(torch.from_numpy(obs[:64]), torch.randn(64, 4, 3))[:, 0]
                 - torch.from_numpy(actions[:64])).abs().mean().item()  # fmt: skip
    assert error < 0.5 * untrained, (error, untrained)


def test_bc_resumes_from_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    obs, actions = rng.normal(size=(60, 6)).astype(np.float32), rng.uniform(-1, 1, (60, 3)).astype(np.float32)
    ends = np.array([30, 60])
    config = BCConfig(iterations=40, batch_size=16, warmup_iterations=5, log_every=10, checkpoint_every=20)
    _, straight = train_diffusion_bc(obs, actions, ends, SMALL, config, tmp_path / "a", progress=False)

    step = DiffusionBC.step

    def interrupted(self: DiffusionBC, *args: torch.Tensor) -> float:
        if self.iteration == 25:  # killed between the checkpoint at 20 and the next one
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(DiffusionBC, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_diffusion_bc(obs, actions, ends, SMALL, config, tmp_path / "b", progress=False)
    monkeypatch.setattr(DiffusionBC, "step", step)
    _, resumed = train_diffusion_bc(obs, actions, ends, SMALL, config, tmp_path / "b", progress=False)
    assert resumed.iteration == 40
    for a, b in zip(straight.ema.parameters(), resumed.ema.parameters(), strict=True):
        torch.testing.assert_close(a, b)


class ZeroNoiseActor(torch.nn.Module):
    """A noise actor whose deterministic noise is a fixed function of the observation."""

    def forward(self, obs: torch.Tensor, deterministic: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(obs[:, :1]).expand(-1, 12).contiguous(), torch.zeros(obs.shape[0])


def test_the_chunked_graph_executes_each_chunk_then_samples_the_next() -> None:
    policy = small_policy(2)
    graph = ChunkedNoisePolicy(policy, ZeroNoiseActor(), noise_bound=1.5, stochastic=False)
    state = torch.tensor([initial_chunk_state(policy)]).repeat(2, 1)
    observations = torch.randn(6, 2, 6)
    executed = []
    for obs in observations:
        action, state = graph(obs, state)
        executed.append(action)
    # Steps 0-1 execute the chunk sampled at step 0, steps 2-3 the one sampled at step 2, and so on.
    for start in (0, 2, 4):
        obs = observations[start]
        chunk = policy.sample(obs, torch.tanh(obs[:, :1]).expand(-1, 12).reshape(2, 4, 3))
        torch.testing.assert_close(executed[start], chunk[:, 0])
        torch.testing.assert_close(executed[start + 1], chunk[:, 1])
