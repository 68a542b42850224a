"""DSRL: the latent-noise wrapper decodes once and deterministically, DSRL-NA and DSRL-SAC learn a toy task
whose best noise is known, and the noise actor stays within noise_bound."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from test_sac import TargetEnv, tiny_config, tiny_runner

from robotrl.algos.sac import SAC
from robotrl.wrappers.latent_noise import LatentNoiseEnv

BOUND = 1.5


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


class FlipBase:
    """A stand-in for DiffusionPolicy: a fixed map from (obs, noise) to a chunk, counting its calls.

    actions[j] = 0.6 * reversed(noise[j]) + 0.1 * obs, so on TargetEnv (obs = target t) the best executed
    noise is reversed(0.9 t) / 0.6, inside the bound; the last H - k noise rows are never executed.
    """

    obs_dim = 2
    action_dim = 2
    prediction_horizon = 4
    action_horizon = 2

    def __init__(self) -> None:
        self.calls = 0

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (0.6 * noise.flip(-1) + 0.1 * obs.unsqueeze(1)).clamp(-1.0, 1.0)


def best_noise(target: torch.Tensor) -> torch.Tensor:
    """The executed part [N, k*A] of the noise that hits the target."""
    return (0.9 * target.flip(-1) / 0.6).repeat(1, FlipBase.action_horizon)


def latent_env(num_envs: int = 8, horizon: int = 4) -> tuple[LatentNoiseEnv, TargetEnv, FlipBase]:
    env, base = TargetEnv(num_envs, horizon=horizon), FlipBase()
    return LatentNoiseEnv(env, base, noise_bound=BOUND), env, base


def noise_return(latent: LatentNoiseEnv, policy: Any) -> float:
    """Mean return of one episode of every env, from a fresh reset."""
    obs, total = latent.reset(seed=123), torch.zeros(latent.num_envs)
    for _ in range(2):  # horizon 4 = two chunks of 2
        obs, reward, *_ = latent.step(policy(obs))
        total += reward
    return total.mean().item()


# ------------------------------------------------------------------------------------------ wrapper
def test_a_step_decodes_once_and_executes_the_first_action_horizon_actions() -> None:
    latent, env, base = latent_env(num_envs=3)
    assert (latent.action_dim, latent.noise_shape, latent.executed_action_dim) == (8, (4, 2), 4)
    obs = latent.reset(seed=0)
    noise = (torch.rand(3, 8) * 2 - 1) * BOUND
    expected = latent.decode(obs, noise)
    base.calls = 0
    _, reward, _, _, info = latent.step(noise)
    assert base.calls == 1
    torch.testing.assert_close(env.chunks[-1], expected)  # the same noise maps to the same actions
    full = base.sample(obs, noise.view(3, 4, 2))
    torch.testing.assert_close(expected, full[:, :2])
    torch.testing.assert_close(info["executed_actions"], expected.flatten(1))
    assert info["steps"].tolist() == [2, 2, 2] and reward.shape == (3,)


def test_noise_beyond_the_bound_decodes_as_its_clamp() -> None:
    latent, env, _ = latent_env(num_envs=2)
    obs = latent.reset(seed=0)
    wild = torch.full((2, 8), 10.0)
    torch.testing.assert_close(latent.decode(obs, wild), latent.decode(obs, torch.full((2, 8), BOUND)))
    latent.step(wild)
    assert env.chunks[-1].abs().max() <= 0.6 * BOUND + 0.1 * obs.abs().max() + 1e-6


def test_step_before_reset_says_what_to_do() -> None:
    latent, _, _ = latent_env()
    with pytest.raises(RuntimeError, match="reset"):
        latent.step(torch.zeros(8, 8))


# ------------------------------------------------------------------------------------------ DSRL-NA
def spy_on_decode(latent: LatentNoiseEnv) -> list[float]:
    """Record the largest |w| of every decode, from the env's steps and the critic targets alike."""
    seen: list[float] = []
    decode = latent.decode

    def spying(obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        seen.append(noise.abs().max().item())
        return decode(obs, noise)

    latent.decode = spying  # type: ignore[method-assign]
    return seen


def test_dsrl_na_learns_the_best_noise_and_stays_in_bound(tmp_path: Path) -> None:
    torch.manual_seed(0)
    latent, env, _ = latent_env()
    seen = spy_on_decode(latent)
    sac = SAC(2, 8, tiny_config(action_bound=BOUND, noise_aliasing=True, utd_ratio=0.5), decoder=latent)
    tiny_runner(latent, sac, tmp_path, total_env_steps=4_000, checkpoint_every=10_000).learn()
    # Q^A learns on what the env executed, not on the noise.
    n = sac.buffer.size
    torch.testing.assert_close(sac.buffer.data["action"][:n], torch.cat(env.chunks).flatten(1)[-n:])
    assert max(seen) <= BOUND

    assert_learned(sac)
    obs = latent_env(num_envs=256)[0].reset(seed=5)
    executed_noise = sac.act(obs, deterministic=True)[:, :4]
    assert (executed_noise - best_noise(obs)).abs().mean() < 0.1


def test_dsrl_sac_learns_on_the_noise_directly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    latent, _, _ = latent_env()
    sac = SAC(2, 8, tiny_config(action_bound=BOUND, utd_ratio=0.5))
    tiny_runner(latent, sac, tmp_path, total_env_steps=4_000, checkpoint_every=10_000).learn()
    assert_learned(sac)


def assert_learned(sac: SAC) -> None:
    """The deterministic noise policy's return against uniform noise over the bound, on 256 envs."""
    latent, _, _ = latent_env(num_envs=256)
    generator = torch.Generator().manual_seed(1)
    random_return = noise_return(
        latent, lambda o: (torch.rand(o.shape[0], 8, generator=generator) * 2 - 1) * BOUND
    )
    learned = noise_return(latent, lambda o: sac.act(o, deterministic=True))
    # Uniform noise misses by about 0.5 a step (-2 an episode); a learned policy by < 0.025 a step.
    assert random_return < -1.5
    assert learned > -0.1, (learned, random_return)


def test_the_noise_actor_never_exceeds_the_bound() -> None:
    latent, _, _ = latent_env()
    sac = SAC(2, 8, tiny_config(action_bound=BOUND, noise_aliasing=True, warmup_steps=0), decoder=latent)
    with torch.no_grad():
        sac.actor.net[-1].bias[:8] = torch.linspace(-1e3, 1e3, 8)
        sac.actor.net[-1].bias[8:] = 2.0  # the widest std allowed
    obs = torch.randn(512, 2) * 10
    for noise in (sac.explore(obs), sac.act(obs), sac.act(obs, deterministic=True), sac.actor(obs)[0]):
        assert noise.abs().max() <= BOUND


def test_a_dsrl_na_checkpoint_restores_both_critics() -> None:
    latent, _, _ = latent_env()
    cfg = tiny_config(action_bound=BOUND, noise_aliasing=True, warmup_steps=32, batch_size=32)
    first = SAC(2, 8, cfg, seed=0, decoder=latent)
    obs, chunk = torch.rand(64, 2), torch.rand(64, 4)
    first.store(obs, chunk, -torch.rand(64), obs, torch.zeros(64))
    first.update()
    second = SAC(2, 8, cfg, seed=3, decoder=latent)
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)  # as a checkpoint does: state_dicts hold references
    saved.seek(0)
    second.load_state_dict(torch.load(saved, weights_only=False))
    assert second.buffer.data["action"].shape[1] == 4  # Q^A's action: the executed chunk
    torch.testing.assert_close(second.gradient_step(), first.gradient_step())
    assert first.noise_critic is not None and second.noise_critic is not None
    for a, b in zip(first.noise_critic.parameters(), second.noise_critic.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_noise_aliasing_and_decoder_come_together() -> None:
    latent, _, _ = latent_env()
    with pytest.raises(ValueError, match="decoder"):
        SAC(2, 8, tiny_config(noise_aliasing=True))
    with pytest.raises(ValueError, match="decoder"):
        SAC(2, 8, tiny_config(), decoder=latent)
