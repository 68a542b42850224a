"""Chunked diffusion policies as one per-step graph: what the ResiP and DSRL bundles export.

The robot calls a bundle once per control step. The chunk being executed and the place in it are the
graph's recurrent state ([chunk (H*A values), index]); when the index reaches the action horizon, the
graph samples a new chunk by DDIM inside the graph. The new chunk is computed every step and selected
with `where`, so the graph has no data-dependent control flow: a step costs one chunk's sampling, which
is the latency the bundle reports. The initial state has index = action horizon, so the first step
samples.
"""

from __future__ import annotations

import torch
from torch import nn

from robotrl.policies.diffusion import DiffusionPolicy


def initial_chunk_state(base: DiffusionPolicy) -> list[float]:
    """Per-sample initial value of the chunk state: an empty chunk, used up (so the first step samples)."""
    return [0.0] * (base.prediction_horizon * base.action_dim) + [float(base.action_horizon)]


class _Chunker(nn.Module):
    def __init__(self, base: DiffusionPolicy):
        super().__init__()
        self.base = base
        self.chunk_size = base.prediction_horizon * base.action_dim

    def advance(
        self, obs: torch.Tensor, state: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the base action of this step [B, A], the next state) from the state and a fresh chunk's noise."""
        b = self.base
        chunk, index = state[:, : self.chunk_size], state[:, self.chunk_size :]
        replan = index >= b.action_horizon
        fresh = b.sample(obs, noise.reshape(-1, b.prediction_horizon, b.action_dim)).flatten(1)
        chunk = torch.where(replan, fresh, chunk)
        index = torch.where(replan, torch.zeros_like(index), index)
        step = torch.arange(b.prediction_horizon, dtype=index.dtype, device=index.device)
        pick = (step.unsqueeze(0) == index).to(chunk.dtype)  # [B, H] one-hot of the index
        action = (chunk.view(-1, b.prediction_horizon, b.action_dim) * pick.unsqueeze(-1)).sum(1)
        return action, torch.cat((chunk, index + 1.0), dim=-1)


class ChunkedResidualPolicy(_Chunker):
    """ResiP: base chunk action + scale * deterministic residual; the base's noise comes from the runtime."""

    def __init__(self, base: DiffusionPolicy, residual_actor: nn.Module, scale: float):
        super().__init__(base)
        self.residual_actor = residual_actor
        self.scale = scale

    def forward(
        self, obs: torch.Tensor, chunk_state: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        base_action, next_state = self.advance(obs, chunk_state, noise)
        residual = self.residual_actor(torch.cat((obs, base_action), dim=-1))
        return (base_action + self.scale * residual).clamp(-1.0, 1.0), next_state


class ChunkedNoisePolicy(_Chunker):
    """DSRL: the noise actor's noise, decoded by the base's DDIM.

    Deterministic: the actor's bounded mean, no randomness at all. Stochastic (as SAC trained it): the
    actor's squashed Gaussian, its standard-normal draw an input the runtime samples.
    """

    def __init__(self, base: DiffusionPolicy, noise_actor: nn.Module, noise_bound: float, stochastic: bool):
        super().__init__(base)
        self.noise_actor = noise_actor
        self.noise_bound = noise_bound
        self.stochastic = stochastic

    def forward(
        self, obs: torch.Tensor, chunk_state: torch.Tensor, *actor_noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stochastic:
            noise = self.noise_actor.with_noise(obs, actor_noise[0])
        else:
            noise, _ = self.noise_actor(obs, deterministic=True)
        return self.advance(obs, chunk_state, noise.clamp(-self.noise_bound, self.noise_bound))
