"""What a robot bridge needs from a robot, simulated or real: take a command, report the state.

The simulator behind this interface is `robotrl.envs.quadrotor.sim_backend.SimulatedQuadrotor`; a
hardware driver (a serial protocol over pyserial) implements the same three methods, so the ROS 2
bridge node and everything downstream of it do not change between the two.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from robotrl.control.state import RobotState


class RobotBackend(Protocol):
    def command(self, action: np.ndarray) -> None:
        """Set the actuator command (the bundle's action layout) applied from now on."""
        ...

    def advance(self, now_s: float) -> RobotState:
        """Move the robot up to time now_s (a real robot does so by itself) and return its state."""
        ...

    def close(self) -> None: ...
