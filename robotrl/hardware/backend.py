"""What a robot bridge needs from a robot, simulated or real: take a command, report the state.

The simulators behind this interface are `robotrl.envs.quadrotor.sim_backend.SimulatedQuadrotor` (state:
a RobotState) and `robotrl.envs.quadruped.sim_backend.SimulatedQuadruped` (a LeggedState); a hardware
driver (a serial protocol over pyserial) implements the same three methods, so the ROS 2 bridge node and
everything downstream of it do not change between the two.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import numpy as np

StateT_co = TypeVar("StateT_co", covariant=True)


class RobotBackend(Protocol[StateT_co]):
    def command(self, action: np.ndarray) -> None:
        """Set the actuator command applied from now on: a quadrotor's motor commands (the bundle's action
        layout), a legged robot's joint targets [rad] with NaN for a damped joint."""
        ...

    def advance(self, now_s: float) -> StateT_co:
        """Move the robot up to time now_s (a real robot does so by itself) and return its state."""
        ...

    def close(self) -> None: ...
