"""Success rate of a policy over a fixed set of seeded episodes.

Every env flies the same number of episodes from a seeded reset and only those count, so the estimate
is not biased towards the short (successful) episodes that finish first. The env may be any of the
manipulation envs or wrappers: a step executes one action or one chunk, and info["success"] and
info["episode_length"] describe the episodes that ended.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

Act = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(obs [N, O], fresh [N] bool: that env's episode just started) -> the env's action."""


class ChunkSteps:
    """A chunking env whose `step` takes the chunk [N, k, A] (so a base policy's chunks can be scored)."""

    def __init__(self, env: Any):
        self.env = env
        self.num_envs = env.num_envs

    def reset(self, seed: int | None = None) -> torch.Tensor:
        return self.env.reset(seed=seed)

    def step(
        self, chunk: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        return self.env.step_chunk(chunk)


def evaluate_success(env: Any, act: Act, episodes: int = 100, seed: int = 10_000) -> dict[str, float]:
    """Success rate, mean episode length and env steps over `episodes` episodes (rounded up per env)."""
    per_env = math.ceil(episodes / env.num_envs)
    obs = env.reset(seed=seed)
    fresh = torch.ones(env.num_envs, dtype=torch.bool)
    finished = torch.zeros(env.num_envs, dtype=torch.long)
    successes = torch.zeros(env.num_envs)
    lengths = torch.zeros(env.num_envs)
    steps = 0
    start = time.perf_counter()
    with torch.no_grad():
        while (finished < per_env).any():
            obs, _, terminated, truncated, info = env.step(act(obs, fresh))
            steps += int(info["steps"].sum())
            done = terminated | truncated
            counts = done & (finished < per_env)
            successes += (info["success"] & counts).float()
            if counts.any():
                lengths += torch.where(counts, info["episode_length"].float(), 0.0)
            finished += done.long()
            fresh = done
    total = per_env * env.num_envs
    return {
        "success_rate": successes.sum().item() / total,
        "episodes": float(total),
        "episode_length_mean": lengths.sum().item() / total,
        "env_steps": float(steps),
        "wall_s": time.perf_counter() - start,
    }
