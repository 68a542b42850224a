"""Reference motions for the quadrotor task: hold a point, hop between random waypoints, fly a figure-8.

All are closed-form functions of time per env, so a batch of 4096 envs with different phases and
sizes costs a handful of tensor ops a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from robotrl.control.reference import figure8

TargetMode = Literal["hover", "waypoints", "figure8"]
TARGET_MODES: tuple[str, ...] = ("hover", "waypoints", "figure8")


@dataclass
class TargetConfig:
    mode: TargetMode = "hover"
    """hover: a fixed point; waypoints: a new random point every waypoint_period_s; figure8: a lemniscate."""
    waypoint_range_m: float = 1.0
    """Waypoints are uniform in a cube of this half-width around the origin [m]."""
    waypoint_period_s: float = 2.0
    """Time between waypoint jumps [s]."""
    figure8_size_m: float = 1.0
    """Half-width of the figure-8 along x [m]; the y extent is half of it."""
    figure8_period_s: float = 6.0
    """Time for one full figure-8 [s]."""

    def __post_init__(self) -> None:
        if self.mode not in TARGET_MODES:
            raise ValueError(f"target mode '{self.mode}' is not one of {TARGET_MODES}")
        if self.waypoint_period_s <= 0 or self.figure8_period_s <= 0:
            raise ValueError("waypoint_period_s and figure8_period_s must be > 0")


class TargetGenerator:
    """Target position and velocity [N, 3] in the world frame at each env's episode time."""

    def __init__(self, config: TargetConfig, num_envs: int, device: torch.device):
        self.config = config
        self.waypoints = torch.zeros(num_envs, 3, device=device)
        self.phase = torch.zeros(num_envs, device=device)
        self._last_jump = torch.zeros(num_envs, dtype=torch.long, device=device)

    def reset_idx(self, env_ids: torch.Tensor, generator: torch.Generator) -> None:
        device = self.waypoints.device
        n = env_ids.numel()
        self.waypoints[env_ids] = 0.0
        self._last_jump[env_ids] = 0
        self.phase[env_ids] = 2 * math.pi * torch.rand(n, generator=generator, device=device)

    def __call__(self, time_s: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if cfg.mode == "hover":
            return self.waypoints, torch.zeros_like(self.waypoints)
        if cfg.mode == "waypoints":
            # time_s is step * dt in float32 (0.1 s can read 0.0999999): a jump due on a step must
            # not slip to the next one.
            jump = torch.floor(time_s / cfg.waypoint_period_s + 1e-4).long()
            moved = jump > self._last_jump
            if moved.any():
                ids = moved.nonzero().squeeze(-1)
                r = cfg.waypoint_range_m
                new = (2 * torch.rand(ids.numel(), 3, generator=generator, device=time_s.device) - 1) * r
                self.waypoints[ids] = new
                self._last_jump[ids] = jump[ids]
            return self.waypoints, torch.zeros_like(self.waypoints)
        omega = 2 * math.pi / cfg.figure8_period_s
        return figure8(omega * time_s + self.phase, cfg.figure8_size_m, omega, xp=torch)
