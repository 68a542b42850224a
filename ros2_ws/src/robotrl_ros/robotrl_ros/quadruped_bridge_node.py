"""The quadruped's robot bridge: one A1 in MuJoCo stepped one control period a tick, joint targets in.

Publishes /robotrl/joint_states, /robotrl/imu and /robotrl/foot_contacts each tick with one stamp, and
applies the joint targets of /robotrl/motor_cmd (position [rad]; NaN damps that joint). When no command
came for command_timeout_periods, every joint is damped, as a motor driver's watchdog would: a dead
safety node leaves a robot sitting down, not holding its last targets. The trajectory rows are
(t, x, y, z, yaw, FR, FL, RR, RL contact) from the simulator's ground truth, for the jump report.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Imu, JointState

from robotrl.control.legged import LeggedState
from robotrl.deployment import QuadrupedBridgeConfig, joint_limits, load_robot_profile
from robotrl.envs.quadruped.sim_backend import SimulatedQuadruped
from robotrl_ros.bridge_node import LoopBridge
from robotrl_ros.messages import COMMAND_QOS, STATE_QOS, declare_section, legged_messages, now_s
from robotrl_ros.runner import run_single


class QuadrupedBridgeNode(LoopBridge):
    def __init__(self, node_name: str = "bridge", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        cfg = declare_section(self, QuadrupedBridgeConfig)
        self.joints = joint_limits(load_robot_profile(self.declare_parameter("robot", "").value)).joints
        self.command_timeout_s = cfg.command_timeout_periods * self.period_s
        self.last_command_s = -math.inf
        self.joint_pub = self.create_publisher(JointState, "/robotrl/joint_states", STATE_QOS)
        self.imu_pub = self.create_publisher(Imu, "/robotrl/imu", STATE_QOS)
        self.contact_pub = self.create_publisher(JointState, "/robotrl/foot_contacts", STATE_QOS)
        self.create_subscription(JointState, "/robotrl/motor_cmd", self.on_motor_cmd, COMMAND_QOS)
        self.backend: SimulatedQuadruped = SimulatedQuadruped(self.joints, self.period_s)
        self.start(cfg, self.backend)

    def tick(self) -> None:
        stale = now_s(self) - self.last_command_s > self.command_timeout_s
        if stale and not self.backend.damped.all():
            self.get_logger().warning(
                f"no motor command for {self.command_timeout_s:.3f} s: every joint damped"
            )
            self.backend.command(np.full(self.joints.num_joints, np.nan))
        super().tick()

    def record(self, now: float, state: LeggedState) -> tuple[float, ...]:
        truth = self.backend.truth
        contacts = state.foot_contact(self.joints.contact_threshold_n)
        return (now, *map(float, truth.base_pos_w[0]), state.yaw_rad(), *map(float, contacts))

    def publish_state(self, state: LeggedState, stamp: Time) -> None:
        joint_msg, imu, contacts = legged_messages(state, stamp, self.joints)
        self.imu_pub.publish(imu)
        self.contact_pub.publish(contacts)
        self.joint_pub.publish(joint_msg)

    def on_motor_cmd(self, msg: JointState) -> None:
        names = list(self.joints.names)
        if len(msg.position) != len(names) or (msg.name and list(msg.name) != names):
            self.get_logger().error(
                f"motor command for {list(msg.name)} with {len(msg.position)} positions ignored; expected "
                f"the {len(names)} joints {names}"
            )
            return
        try:
            self.backend.command(np.asarray(msg.position, np.float64))
        except ValueError as err:
            self.get_logger().error(f"motor command refused: {err}")
            return
        self.last_command_s = now_s(self)
        self.answered(msg.header.stamp)


def main() -> None:
    run_single(QuadrupedBridgeNode)


if __name__ == "__main__":
    main()
