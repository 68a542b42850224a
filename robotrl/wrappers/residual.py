"""ResiP's action space: a per-step correction on top of a frozen chunking base policy.

The wrapped env's action is the residual r [N, A]; the env executes clip(base + scale * r), where base is
the current action of the base policy's chunk. The observation is the env's observation with that base
action appended, so a plain PPO (robotrl.algos.ppo) learns the residual without knowing about chunks.
Each env keeps its own place in its chunk and samples a new one when the chunk is used up or its
episode starts; a zero residual executes exactly what the base policy alone would.
"""

from __future__ import annotations

from typing import Any

import torch

from robotrl.wrappers.latent_noise import BasePolicy, StepResult


class ResidualEnv:
    """Batched env (DESIGN.md's contract) whose action is a residual over `base`'s chunked actions."""

    def __init__(self, env: Any, base: BasePolicy, scale: float = 0.1, seed: int = 0):
        if base.obs_dim != env.observation_dim:
            raise ValueError(
                f"base policy reads {base.obs_dim} observations, the env gives {env.observation_dim}"
            )
        self.env = env
        self.base = base
        self.scale = scale
        self.num_envs = env.num_envs
        self.action_dim = base.action_dim
        self.observation_dim = env.observation_dim + base.action_dim
        self.generator = torch.Generator().manual_seed(seed)
        n = env.num_envs
        self._chunk = torch.zeros(n, base.prediction_horizon, base.action_dim)
        self._index = torch.zeros(n, dtype=torch.long)
        self._obs = torch.zeros(n, env.observation_dim)

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.base.prediction_horizon, self.base.action_dim, generator=self.generator)

    def _replan(self, rows: torch.Tensor) -> None:
        """New chunks for the envs in `rows` (bool [N]), from their current observations."""
        if rows.any():
            ids = rows.nonzero().squeeze(-1)
            self._chunk[ids] = self.base.sample(self._obs[ids], self._noise(ids.numel()))
            self._index[ids] = 0

    def base_action(self) -> torch.Tensor:
        return self._chunk[torch.arange(self.num_envs), self._index]

    def _observe(self) -> torch.Tensor:
        return torch.cat((self._obs, self.base_action()), dim=-1)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        self._obs = self.env.reset(seed=seed)
        self._replan(torch.ones(self.num_envs, dtype=torch.bool))
        return self._observe()

    def privileged_observation(self) -> torch.Tensor:
        return self._observe()

    def step(self, residual: torch.Tensor) -> StepResult:
        """Execute base + scale * residual for one step; info["base_actions"] is what the base proposed."""
        base = self.base_action()
        action = (base + self.scale * residual).clamp(-1.0, 1.0)
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = terminated | truncated
        info = {**info, "base_actions": base, "executed_actions": action}
        if done.any():
            # The last observation of a finished episode, with the base action it would have seen next,
            # so that a time-out bootstraps from the right value.
            ids = done.nonzero().squeeze(-1)
            final = info["final_obs"][ids]
            index = self._index[ids] + 1
            exhausted = index >= self.base.action_horizon
            next_base = self._chunk[ids, index.clamp(max=self.base.prediction_horizon - 1)]
            if exhausted.any():
                fresh = self.base.sample(final[exhausted], self._noise(int(exhausted.sum())))
                next_base[exhausted] = fresh[:, 0]
            final_full = torch.zeros(self.num_envs, self.observation_dim)
            final_full[ids] = torch.cat((final, next_base), dim=-1)
            info["final_obs"] = info["final_privileged_obs"] = final_full
        self._obs = obs
        self._index += 1
        self._replan(done | (self._index >= self.base.action_horizon))
        observation = self._observe()
        info["privileged_obs"] = observation
        return observation, reward, terminated, truncated, info
