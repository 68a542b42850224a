"""Reference motions as closed-form functions of time, shared by the batched simulator and the robot.

`xp` is the array module (numpy here on the robot, torch in the simulator's batch): both spell
sin, cos, stack and zeros_like the same way, so one formula serves both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def figure8(theta: Any, size_m: float, omega_radps: float, xp: Any = np) -> tuple[Any, Any]:
    """Lemniscate position and velocity [..., 3] at phase theta: x = a sin(theta), y = a/2 sin(2 theta).

    theta = omega * t (+ phase); size_m is the half-width along x, the y extent is half of it.
    """
    a = size_m
    zero = xp.zeros_like(theta)
    pos = xp.stack((a * xp.sin(theta), 0.5 * a * xp.sin(2 * theta), zero), -1)
    vel = xp.stack((a * omega_radps * xp.cos(theta), a * omega_radps * xp.cos(2 * theta), zero), -1)
    return pos, vel


@dataclass
class ReferenceConfig:
    mode: str = "figure8"
    """hover: hold `center_m`; figure8: a lemniscate around it."""
    center_m: tuple[float, float, float] = (0.0, 0.0, 1.0)
    size_m: float = 1.0
    """Half-width of the figure-8 along x [m]; the y extent is half of it."""
    period_s: float = 6.0
    start_after_s: float = 2.0
    """Hold the start point this long before moving (lets the quad settle after arming)."""

    def __post_init__(self) -> None:
        if self.mode not in ("hover", "figure8"):
            raise ValueError(f"reference mode '{self.mode}' is not one of ('hover', 'figure8')")
        if self.period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {self.period_s}")

    def at(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Setpoint position and velocity t_s seconds after the reference started."""
        center = np.asarray(self.center_m, np.float64)
        moving_s = t_s - self.start_after_s
        if self.mode == "hover" or moving_s < 0:
            return center, np.zeros(3)
        omega = 2 * math.pi / self.period_s
        pos, vel = figure8(np.float64(omega * moving_s), self.size_m, omega)
        return center + pos, vel
