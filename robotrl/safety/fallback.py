"""What flies the robot after the policy lost the chain's trust.

A fallback is deliberately simple and model-based: it must work in exactly the states where the learned
policy just failed. The chain still bounds and slew-limits whatever it returns, so a fallback bug can
stop the robot but never command more than the policy was allowed to.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from robotrl.control.geometric import GeometricController
from robotrl.control.state import RobotState, quadrotor_observation
from robotrl.safety.config import SafetyLimits

LANDED_HEIGHT_M = 0.05
"""Within this height above the ground [m] ..."""
LANDED_SPEED_MPS = 0.2
"""... and slower than this [m/s], the quadrotor counts as landed and its motors are stopped."""


class Fallback(Protocol):
    """The state is the chain's: a quadrotor's RobotState, a legged robot's LeggedState."""

    def engage(self, state: Any, now_s: float) -> None:
        """Called once, with the first usable state after a fault, before the first act()."""

    def act(self, state: Any, now_s: float, previous_action: np.ndarray) -> np.ndarray:
        """The action for this period; previous_action is what the chain sent last."""


class LandingFallback:
    """Level the quadrotor and descend at a fixed speed onto a point inside the geofence, then stop.

    On engage it fixes the landing point: the current x, y clamped into the geofence shrunk by margin_m,
    on the ground. The setpoint starts at the current altitude and moves down at descent_speed_mps with
    that velocity as the target velocity, so the geometric controller tracks a slow, level descent.
    """

    def __init__(
        self,
        controller: GeometricController,
        limits: SafetyLimits,
        descent_speed_mps: float = 0.5,
        ground_z_m: float | None = None,
        margin_m: float = 0.25,
    ):
        """ground_z_m: the floor [m] (default: the geofence's lower z); margin_m: distance kept from the
        geofence walls [m] (at most half the box)."""
        fence_min = np.asarray(limits.geofence_min_m, np.float64)
        fence_max = np.asarray(limits.geofence_max_m, np.float64)
        ground = fence_min[2] if ground_z_m is None else float(ground_z_m)
        if not fence_min[2] <= ground < fence_max[2]:
            raise ValueError(
                f"ground_z_m {ground} must lie in the geofence's z range [{fence_min[2]}, {fence_max[2]}) m"
            )
        if not (descent_speed_mps > 0 and margin_m >= 0):
            raise ValueError(
                f"need descent_speed_mps > 0 and margin_m >= 0, got {descent_speed_mps}, {margin_m}"
            )
        margin = np.minimum(margin_m, 0.5 * (fence_max - fence_min))
        self.controller = controller
        self.descent_speed_mps = float(descent_speed_mps)
        self.ground_z_m = ground
        self._xy_min = (fence_min + margin)[:2]
        self._xy_max = (fence_max - margin)[:2]
        self._ceiling_z_m = float(fence_max[2])
        self._stop = np.asarray(limits.stop_action, np.float64)
        self._landing_xy = np.zeros(2)
        self._start_z_m = ground
        self._start_s = 0.0
        self._landed = False

    @property
    def landed(self) -> bool:
        """True once it stopped the motors on the ground (until the next engage)."""
        return self._landed

    def engage(self, state: RobotState, now_s: float) -> None:
        position = np.asarray(state.position_w, np.float64)
        self._landing_xy = np.clip(position[:2], self._xy_min, self._xy_max)
        self._start_z_m = float(np.clip(position[2], self.ground_z_m, self._ceiling_z_m))
        self._start_s = now_s
        self._landed = False
        self.controller.reset(1)

    def act(self, state: RobotState, now_s: float, previous_action: np.ndarray) -> np.ndarray:
        """Motors stay off once landed: a landed quadrotor is never restarted by the fallback."""
        self._landed = self._landed or (
            state.position_w[2] <= self.ground_z_m + LANDED_HEIGHT_M
            and np.linalg.norm(state.velocity_w) < LANDED_SPEED_MPS
        )
        if self._landed:
            return self._stop.copy()
        setpoint_z = self._start_z_m - self.descent_speed_mps * max(now_s - self._start_s, 0.0)
        descending = setpoint_z > self.ground_z_m
        target_position = np.array((*self._landing_xy, max(setpoint_z, self.ground_z_m)))
        target_velocity = np.array((0.0, 0.0, -self.descent_speed_mps if descending else 0.0))
        obs = quadrotor_observation(state, target_position, target_velocity, previous_action)
        if not np.isfinite(obs).all():
            # Finite in float64 but not in the policy's float32 layout: too far off to fly anywhere.
            return self._stop.copy()
        return self.controller.act(obs[None])[0]
