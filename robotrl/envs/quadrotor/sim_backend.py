"""One simulated quadrotor behind the robot-backend interface, for the ROS 2 bridge.

It steps the same batched dynamics the policies train in (a batch of one) at a fixed period, with a
floor: a quad that reaches the ground rests there. Until the first command above the motor-off level
arrives the quad is held still at its start pose with its motors at hover, like a hand launch, so a
disarmed graph does not start with a fall.
"""

from __future__ import annotations

import numpy as np
import torch

from robotrl.control.state import RobotState
from robotrl.envs.quadrotor.dynamics import (
    ANGVEL_B,
    LINVEL_W,
    POS_W,
    QUAT_WXYZ,
    QuadrotorDynamics,
    hover_state,
    quat_to_rotmat,
)
from robotrl.envs.quadrotor.platforms import load_platform


class SimulatedQuadrotor:
    def __init__(
        self,
        platform: str,
        dt: float = 0.01,
        initial_position_m: tuple[float, float, float] = (0.0, 0.0, 1.0),
        ground_z_m: float = 0.0,
    ):
        self.params = load_platform(platform)
        self.dynamics = QuadrotorDynamics(self.params, dt=dt)
        self.dt = dt
        self.ground_z_m = ground_z_m
        self.state = hover_state(self.params, torch.tensor([initial_position_m], dtype=torch.float32))
        self.released = False
        self.time_s: float | None = None
        self._action = torch.full((1, 4), -1.0)

    def command(self, action: np.ndarray) -> None:
        action = np.asarray(action, np.float32).reshape(1, 4)
        # The bridge only forwards the safety chain's output, which is always finite and bounded;
        # a backend still never lets a bad number into the integrator.
        if not np.isfinite(action).all():
            raise ValueError(f"non-finite motor command {action.tolist()}")
        self._action = torch.from_numpy(np.clip(action, -1.0, 1.0))
        self.released = self.released or bool((action > -1.0).any())

    def advance(self, now_s: float) -> RobotState:
        """Integrate whole periods up to now_s (at least one once released), then report the state."""
        if self.time_s is None:
            self.time_s = now_s
        steps = 0
        while self.time_s + self.dt <= now_s + 1e-9:
            self.time_s += self.dt
            steps += 1
        if self.released:
            with torch.no_grad():
                for _ in range(steps):
                    self.state = self.dynamics.step(self.state, self._action).contiguous()
                    self._rest_on_ground()
        return self.robot_state(now_s)

    def _rest_on_ground(self) -> None:
        below = self.state[0, POS_W.start + 2] < self.ground_z_m
        if below:
            self.state[0, POS_W.start + 2] = self.ground_z_m
            self.state[0, LINVEL_W] = 0.0
            self.state[0, ANGVEL_B] = 0.0

    def robot_state(self, stamp_s: float) -> RobotState:
        s = self.state[0].numpy().astype(np.float64)
        return RobotState(
            stamp_s=stamp_s,
            position_w=s[POS_W].copy(),
            velocity_w=s[LINVEL_W].copy(),
            rotation_wb=quat_to_rotmat(self.state[0, QUAT_WXYZ]).numpy().astype(np.float64),
            angular_velocity_b=s[ANGVEL_B].copy(),
        )

    def close(self) -> None:
        pass
