"""Test-side ROS 2 nodes shared by the graph tests of both robots."""

from __future__ import annotations

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState

from robotrl_ros.messages import COMMAND_QOS, now_s


class MotorLog(Node):
    """Every command the bridge would get on /robotrl/motor_cmd, with its receive time. `field` is the
    JointState field the robot reads: effort for a quadrotor's rotor thrusts, position for joint targets."""

    def __init__(self, field: str) -> None:
        super().__init__("test_motor_log")
        self.field = field
        self.commands: list[tuple[float, np.ndarray]] = []
        self.create_subscription(JointState, "/robotrl/motor_cmd", self.on_cmd, COMMAND_QOS)

    def on_cmd(self, msg: JointState) -> None:
        self.commands.append((now_s(self), np.asarray(getattr(msg, self.field), np.float32)))

    def since(self, t: float) -> list[np.ndarray]:
        """The commands received at or after t, oldest first."""
        return [c for s, c in self.commands if s >= t]
