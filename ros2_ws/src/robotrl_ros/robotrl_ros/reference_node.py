"""Publishes the setpoint the policy tracks: hold a point, or fly a figure-8 around it, timed from arming.

It publishes the next horizon_s of the reference at publish_hz, and the policy and safety nodes evaluate
it at each state's stamp. The defaults (20 Hz, 80 ms ahead, one point a control period) keep it out of
most control periods: at the control rate its timer fired between a state and its command every
period (same period, same phase), and a long window stalls the executor (14 ms for 1 s of points).
"""

from __future__ import annotations

import numpy as np
from rclpy.node import Node
from std_msgs.msg import UInt32
from trajectory_msgs.msg import MultiDOFJointTrajectory

from robotrl.control.reference import ReferenceConfig
from robotrl_ros.messages import COMMAND_QOS, LATCHED_QOS, declare_section, now_s, reference_message, to_time
from robotrl_ros.runner import run_single


class ReferenceNode(Node):
    def __init__(self, node_name: str = "reference", **kwargs):
        super().__init__(node_name, **kwargs)
        self.config = declare_section(self, ReferenceConfig)
        rate = self.declare_parameter("control_rate_hz", 100.0).value
        self.publish_hz = self.declare_parameter("publish_hz", 20.0).value
        self.horizon_s = self.declare_parameter("horizon_s", 0.08).value
        self.dt_s = 1.0 / rate
        self.publisher = self.create_publisher(MultiDOFJointTrajectory, "/robotrl/reference", COMMAND_QOS)
        self.start_s: float | None = None
        self.create_subscription(UInt32, "/robotrl/episode", self.on_episode, LATCHED_QOS)
        self.timer = self.create_timer(1.0 / self.publish_hz, self.tick)

    def on_episode(self, msg: UInt32) -> None:
        """The reference's clock starts when the robot is armed: until then it holds the start point."""
        self.start_s = now_s(self)
        self.tick()

    def reference_at(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Setpoint position and velocity at time t_s (same clock as the stamps)."""
        return self.config.at(0.0 if self.start_s is None else t_s - self.start_s)

    def tick(self) -> None:
        """The next horizon_s of the reference, one point a control period."""
        t = now_s(self)
        times = t + self.dt_s * np.arange(round(self.horizon_s / self.dt_s) + 1)
        pos, vel = (np.stack(v) for v in zip(*(self.reference_at(ti) for ti in times), strict=True))
        self.publisher.publish(reference_message(to_time(t), self.dt_s, pos, vel))


def main() -> None:
    run_single(ReferenceNode)


if __name__ == "__main__":
    main()
