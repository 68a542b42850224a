"""The operator's side of an intervention: while the deadman is held, a motor command on every state.

The commands go to /robotrl/teleop/command, stamped with the state they answer; the safety node takes
them over the policy's for as long as they keep coming and marks each command's source. Nothing is
published while the deadman is up, so the policy's path to the motors has no extra hop (nor a state
subscription here: it exists only while the deadman is held). They are
made on state messages, not on policy actions, so a takeover works when the policy has stopped.
"""

from __future__ import annotations

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy

from robotrl.control.geometric import GeometricController, NominalQuadrotor
from robotrl.deployment import InterventionConfig, load_robot_profile
from robotrl.hil.intervention import OperatorPilot
from robotrl_ros.messages import (
    COMMAND_QOS,
    STATE_QOS,
    declare_section,
    from_time,
    joint_state,
    now_s,
    robot_state,
)
from robotrl_ros.runner import run_single


class InterventionNode(Node):
    def __init__(self, node_name: str = "intervention", **kwargs):
        super().__init__(node_name, **kwargs)
        cfg = declare_section(self, InterventionConfig)
        rate = self.declare_parameter("control_rate_hz", 100.0).value
        robot = load_robot_profile(self.declare_parameter("robot", "").value)
        controller = GeometricController(NominalQuadrotor.from_platform_yaml(robot.platform), dt=1 / rate)
        self.pilot = OperatorPilot(
            controller, cfg.deadman_button, cfg.axes, cfg.max_speed_mps, cfg.joy_timeout_s
        )
        self.previous_action = np.zeros(4, np.float32)
        self.action_names = [f"motor_commands.{i}" for i in range(4)]
        self.command_pub = self.create_publisher(JointState, "/robotrl/teleop/command", COMMAND_QOS)
        self.create_subscription(Joy, "/robotrl/teleop/joy", self.on_joy, STATE_QOS)
        self.state_sub = None
        self.create_subscription(JointState, "/robotrl/motor_cmd", self.on_motor_cmd, COMMAND_QOS)

    def on_joy(self, msg: Joy) -> None:
        # A joystick driver stamps its messages; an unstamped one is taken as "now".
        stamp = from_time(msg.header.stamp) or now_s(self)
        self.pilot.on_joy(np.asarray(msg.axes), np.asarray(msg.buttons), stamp)
        # States are only needed while the operator flies; subscribed otherwise, every state would
        # queue one more callback ahead of the policy's command in the executor.
        held = self.pilot.human_active(now_s(self))
        if held and self.state_sub is None:
            self.state_sub = self.create_subscription(Odometry, "/robotrl/state", self.on_state, STATE_QOS)
        elif not held and self.state_sub is not None:
            self.destroy_subscription(self.state_sub)
            self.state_sub = None

    def on_motor_cmd(self, msg: JointState) -> None:
        if len(msg.effort) == self.previous_action.size:
            self.previous_action = np.asarray(msg.effort, np.float32)

    def on_state(self, msg: Odometry) -> None:
        now = now_s(self)
        if not self.pilot.human_active(now):
            return
        action = self.pilot.human_action(robot_state(msg), self.previous_action, now)
        self.command_pub.publish(joint_state(msg.header.stamp, self.action_names, effort=action))


def main() -> None:
    run_single(InterventionNode)


if __name__ == "__main__":
    main()
