"""DSRL's action space: the initial noise of a frozen diffusion policy, decoded into the chunk to execute.

The agent never sees the base policy's weights: it picks the noise w, the base policy's deterministic
sampler turns (obs, w) into an action chunk, and the env executes its first `action_horizon` actions.
`decode` is that map, and `step` goes through it exactly once per chunk (the upstream DSRL-SAC rollout
denoises twice: ANCHORS.md §5), so an exported noise policy plus `decode` acts as trained.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

StepResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]


class BasePolicy(Protocol):
    """What DSRL uses of robotrl.policies.diffusion.DiffusionPolicy."""

    obs_dim: int
    action_dim: int
    prediction_horizon: int
    action_horizon: int

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """obs [N, O], noise [N, H, A] -> actions [N, H, A] in [-1, 1], deterministic in the noise."""
        ...


class ChunkVecEnv(Protocol):
    """A batched env that runs action chunks (robotrl.envs.manipulation.metaworld_env.MetaWorldVecEnv)."""

    num_envs: int
    observation_dim: int

    def reset(self, seed: int | None = None) -> torch.Tensor: ...

    def step_chunk(self, actions: torch.Tensor) -> StepResult:
        """actions [N, k, A]; each env stops early where its episode ends; info["steps"] says how far."""
        ...

    def privileged_observation(self) -> torch.Tensor: ...


def module_device(module: object) -> torch.device:
    """Where a module's weights live (CPU for one without any, e.g. a scripted base)."""
    if isinstance(module, nn.Module):
        for tensor in (*module.parameters(), *module.buffers()):
            return tensor.device
    return torch.device("cpu")


class LatentNoiseEnv:
    """Batched env whose action is the flat noise w [N, H*A] of `base`; a step is one executed chunk."""

    def __init__(self, env: ChunkVecEnv, base: BasePolicy, noise_bound: float = 1.5):
        if base.obs_dim != env.observation_dim:
            raise ValueError(
                f"base policy reads {base.obs_dim} observations, the env gives {env.observation_dim}"
            )
        if not 1 <= base.action_horizon <= base.prediction_horizon:
            raise ValueError(
                f"need 1 <= action_horizon <= prediction_horizon, "
                f"got {base.action_horizon}, {base.prediction_horizon}"
            )
        self.env = env
        self.base = base
        self.noise_bound = noise_bound
        self.num_envs = env.num_envs
        self.observation_dim = env.observation_dim
        self.noise_shape = (base.prediction_horizon, base.action_dim)
        self.action_dim = base.prediction_horizon * base.action_dim
        self.executed_action_dim = base.action_horizon * base.action_dim
        """Size of info["executed_actions"], the action of DSRL-NA's Q^A."""
        self._device = module_device(base)
        self._obs: torch.Tensor | None = None

    def decode(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """obs [N, O], flat noise [N, H*A] -> the chunk to execute, [N, k, A].

        The noise is clamped to [-noise_bound, noise_bound] first: the agent's actions are already there
        (a tanh-bounded actor), and a noise vector from anywhere else decodes the same as its clamp.
        """
        w = noise.clamp(-self.noise_bound, self.noise_bound).reshape(-1, *self.noise_shape)
        chunk = self.base.sample(obs.to(self._device), w.to(self._device))
        return chunk[:, : self.base.action_horizon].to(obs.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        self._obs = self.env.reset(seed=seed)
        return self._obs

    def step(self, noise: torch.Tensor) -> StepResult:
        """Decode once, execute the chunk; info["executed_actions"] [N, k*A] is what was sent."""
        if self._obs is None:
            raise RuntimeError("LatentNoiseEnv.step before reset(): call reset() first")
        chunk = self.decode(self._obs, noise)
        obs, reward, terminated, truncated, info = self.env.step_chunk(chunk)
        self._obs = obs
        return obs, reward, terminated, truncated, {**info, "executed_actions": chunk.flatten(1)}

    def privileged_observation(self) -> torch.Tensor:
        return self.env.privileged_observation()
