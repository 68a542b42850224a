"""The quadruped's policy node: a jump bundle on the robot's joint states, IMU and foot contacts.

A jump starts on /robotrl/jump (std_srvs/Trigger) towards the landing_x_m, landing_y_m and
landing_yaw_rad parameters, read at the trigger, and lasts episode_s; meanwhile the node runs the bundle
on every complete state (`robotrl.control.legged.JumpObservation` builds the 57 values). The policy was
trained only on episodes that begin with their command, so between jumps the node does not run it: it
publishes action 0, the default pose the robot stands in, which keeps the safety chain's stream alive.

The previous action the policy observes is its own, clipped as the training env clipped it: there the
joint-range clip came later, in the simulator, and never reached the observation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from std_srvs.srv import Trigger

from robotrl.control.legged import JUMP_OBSERVATION_LAYOUT, JUMP_TASK, JumpObservation, jump_command
from robotrl.deployment import JumpConfig, joint_limits, load_robot_profile
from robotrl.export.bundle import PolicySpec
from robotrl_ros.messages import LeggedStateSync, declare_section, read_section
from robotrl_ros.policy_node import PolicyNodeBase
from robotrl_ros.runner import run_single


def _layout(fields: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{name}[{size}]" for name, size in fields)


class JumpPolicyNode(PolicyNodeBase):
    def __init__(self, node_name: str = "policy", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        declare_section(self, JumpConfig)
        joints = joint_limits(load_robot_profile(self.declare_parameter("robot", "").value)).joints
        if self.runner.action_dim != joints.num_joints:
            raise ValueError(
                f"jump policy node: bundle {self.runner.bundle_dir} has {self.runner.action_dim} actions, "
                f"the robot {joints.num_joints} joints"
            )
        self.observation = JumpObservation(
            joints.default_pos_rad, joints.contact_threshold_n, joints.action_clip
        )
        self.hold_action = np.zeros(joints.num_joints, np.float32)
        self.jump: JumpConfig | None = None
        """The running jump; None between jumps."""
        self.jumps = 0
        self.sync = LeggedStateSync(self, joints, self.on_state)
        self.create_service(Trigger, "/robotrl/jump", self.on_jump)
        policy = self.runner.spec.policy
        self.get_logger().info(
            f"jump policy node ready: {self.runner.bundle_dir} ({policy.task}, {policy.robot})"
        )

    def check_layout(self, bundle: str, policy: PolicySpec) -> None:
        layout = tuple((f.name, f.size) for f in policy.observation_fields)
        if policy.task != JUMP_TASK or layout != JUMP_OBSERVATION_LAYOUT:
            raise ValueError(
                f"jump policy node: bundle {bundle} is a {policy.task!r} policy for {policy.robot!r} taking "
                f"{policy.observation_dim} observations ({_layout(layout)}); this node runs {JUMP_TASK!r} "
                f"bundles with the {sum(s for _, s in JUMP_OBSERVATION_LAYOUT)}-value layout "
                f"{_layout(JUMP_OBSERVATION_LAYOUT)}"
            )

    def on_jump(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.jump is not None:
            response.success, response.message = False, f"jump {self.jumps} is still running"
            return response
        try:
            jump = read_section(self, JumpConfig)
        except ValueError as err:
            response.success, response.message = False, f"jump parameters refused: {err}"
            return response
        self.observation.start(jump_command(jump.landing_x_m, jump.landing_y_m, jump.landing_yaw_rad))
        self.runner.reset(1)
        self.jump, self.jumps = jump, self.jumps + 1
        response.success = True
        response.message = (
            f"jump {self.jumps}: landing at ({jump.landing_x_m}, {jump.landing_y_m}) m, yaw "
            f"{jump.landing_yaw_rad} rad, policy for {jump.episode_s} s"
        )
        self.get_logger().info(response.message)
        return response

    def on_state(self, stamp: Time) -> None:
        state = self.sync.state()
        if state is None:
            return
        if self.jump is not None and self.observation.episode_time_s(state.stamp_s) >= self.jump.episode_s:
            self.get_logger().info(f"jump {self.jumps} done: holding the default pose")
            self.jump = None
        if self.jump is None:
            self.publish(stamp, self.hold_action, None)
            return
        obs = self.observation.observe(state)
        action = self.act(obs)
        self.observation.record_action(action)
        self.publish(stamp, action, obs)


def main() -> None:
    run_single(JumpPolicyNode)


if __name__ == "__main__":
    main()
