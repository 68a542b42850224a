"""The quadruped's safety node: the joint chain between the jump policy and the motors.

A policy action (the effort of /robotrl/policy/action, in the policy's units) becomes joint targets
through the robot profile's joints, default + scale * clipped action, as the training env mapped it
(after the bundle's action EMA, restarted at 0 each time the chain arms, as each episode started). The
chain (`robotrl.safety.joints`) faults on non-finite or stale input, joint velocity and body tilt, moves
targets within the torque limit and the joint range, and falls back to damped joints. Motor commands
leave as position = joint targets [rad], NaN = damped. The profile's joints, PD gains and robot must be
those the bundle was trained with, or the node refuses to start.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import JointState

from robotrl.control.legged import ActionFilter, LeggedState
from robotrl.deployment import RobotProfile, joint_limits, joint_safety_chain
from robotrl.export.bundle import PolicySpec
from robotrl.safety import Mode, SafetyChain, check_joints_against_bundle
from robotrl_ros.messages import LeggedStateSync, joint_state
from robotrl_ros.runner import run_single
from robotrl_ros.safety_node import SafetyNodeBase


class JointSafetyNode(SafetyNodeBase):
    def __init__(self, node_name: str = "safety", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.sync = LeggedStateSync(self, self.joints, self.on_new_state)

    def build_chain(self, robot: RobotProfile, rate_hz: float, policy: PolicySpec | None) -> SafetyChain:
        limits = joint_limits(robot)
        self.joints = limits.joints
        alpha = policy.safety_limits.get("action_filter_alpha", 1.0) if policy is not None else 1.0
        self.action_filter = ActionFilter(alpha, self.joints.num_joints)
        if policy is not None:
            low = [f.low for f in policy.action_fields for _ in range(f.size)]
            high = [f.high for f in policy.action_fields for _ in range(f.size)]
            check_joints_against_bundle(limits, robot.platform, policy.robot, policy.safety_limits, low, high)
        return joint_safety_chain(limits)

    def latest_state(self) -> LeggedState | None:
        return self.sync.state()

    def chain_action(self, msg: JointState) -> np.ndarray:
        return self.joints.targets(np.asarray(msg.effort, np.float64), self.action_filter)

    def note_mode_change(self, before: Mode, after: Mode, reason: str = "") -> None:
        if after is Mode.POLICY and before is not Mode.POLICY:
            self.action_filter.reset()
        super().note_mode_change(before, after, reason)

    def motor_message(self, stamp: Time, action: np.ndarray) -> JointState:
        return joint_state(stamp, list(self.joints.names), position=action)


def main() -> None:
    run_single(JointSafetyNode)


if __name__ == "__main__":
    main()
