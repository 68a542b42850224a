"""Jump phases from foot contacts, as the reference-free jumping curriculum defines them (ANCHORS §3):
flight is all four feet off the ground, landing is the first foot contact after a flight, and
`has_jumped` latches once a flight has happened, so that rewards and terminations can tell a robot
that has not jumped yet from one that has come down again."""

from __future__ import annotations

import torch


class JumpPhases:
    """Per-env phase flags [num_envs] (bool), updated once per policy step."""

    def __init__(self, num_envs: int, device: str | torch.device = "cpu"):
        self.in_flight = torch.zeros(num_envs, dtype=torch.bool, device=device)
        self.has_jumped = torch.zeros_like(self.in_flight)
        self.has_landed = torch.zeros_like(self.in_flight)

    def update(self, foot_contact: torch.Tensor) -> torch.Tensor:
        """Take the step's foot contacts [N, 4] (bool); return the envs that landed this step [N]."""
        airborne = ~foot_contact.any(dim=-1)
        landed = self.in_flight & ~airborne
        self.has_jumped |= airborne
        self.has_landed |= landed
        self.in_flight = airborne
        return landed

    def reset_idx(self, env_ids: torch.Tensor) -> None:
        """A reset robot stands: not in flight, not jumped, not landed."""
        self.in_flight[env_ids] = False
        self.has_jumped[env_ids] = False
        self.has_landed[env_ids] = False
