"""Score a jumping policy: every robot of a batch jumps once to the same commanded landing.

The env is anything with the jump env's step contract and its info['final'] at episode ends (the MuJoCo
env, or the pybullet one of the sim-to-sim check), so both simulators are scored by the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch


class JumpEnvLike(Protocol):
    num_envs: int
    max_episode_steps: torch.Tensor

    def reset(self, seed: int | None = None) -> torch.Tensor: ...

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]: ...


Actor = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def jump_metrics(
    actor: Actor, env: JumpEnvLike, seed: int = 0, min_apex_gain_m: float = 0.15
) -> dict[str, float]:
    """Run each env's first episode to its end; success rate, apex gain and landing error over them.

    `upward_criterion_rate` counts successes that also rose at least min_apex_gain_m (the in-place
    must-show); the landing error is the horizontal distance of the first landing from the target.
    """
    obs = env.reset(seed=seed)
    n = env.num_envs
    finished = torch.zeros(n, dtype=torch.bool)
    success = torch.zeros(n, dtype=torch.bool)
    landed = torch.zeros(n, dtype=torch.bool)
    apex = torch.zeros(n)
    error = torch.zeros(n)
    distance = torch.zeros(n)
    for _ in range(int(env.max_episode_steps.max().item())):
        obs, _, terminated, truncated, info = env.step(actor(obs))
        fresh = (terminated | truncated).cpu() & ~finished
        if fresh.any():
            final = {k: v.cpu() for k, v in info["final"].items()}
            success |= fresh & info["success"].cpu()
            landed |= fresh & final["has_landed"]
            apex = torch.where(fresh, final["apex_gain_m"], apex)
            error = torch.where(fresh, final["landing_error_m"], error)
            distance = torch.where(fresh, final["landing_pos_rel_m"][:, 0:2].norm(dim=-1), distance)
            finished |= fresh
        if finished.all():
            break
    if not finished.all():
        raise RuntimeError(f"{int((~finished).sum())} of {n} episodes did not end within the episode length")
    met = success & (apex >= min_apex_gain_m)
    return {
        "episodes": float(n),
        "success_rate": success.float().mean().item(),
        "upward_criterion_rate": met.float().mean().item(),
        "landed_rate": landed.float().mean().item(),
        "apex_gain_m_mean": apex.mean().item(),
        "landing_error_m_mean": error[landed].mean().item() if landed.any() else float("nan"),
        "landing_error_m_success_mean": error[success].mean().item() if success.any() else float("nan"),
        "jump_distance_m_mean": distance[landed].mean().item() if landed.any() else float("nan"),
    }
