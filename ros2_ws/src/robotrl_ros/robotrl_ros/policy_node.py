"""Runs a policy bundle with onnxruntime on every state message and publishes its action.

`PolicyNodeBase` is what every robot's policy node shares: it refuses to start on a bad bundle (the
runtime's message says which check failed) or on one for another observation layout, and publishes a
non-finite observation or output as NaN, so that the safety chain falls back at once rather than after
a watchdog timeout. `PolicyNode` is the quadrotor's (jump_policy_node the quadruped's).

The quadrotor node keeps the recurrent state of a recurrent bundle between steps and puts it back to the
bundle's initial value when an episode starts (/robotrl/episode, on arming): what a recurrent policy saw
while the robot sat disarmed is no flight to adapt to. The previous action in the observation is the
command the motors last got (from /robotrl/motor_cmd), as in training, even when a filter or an
operator changed it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import UInt32
from trajectory_msgs.msg import MultiDOFJointTrajectory

from robotrl.control.state import quadrotor_observation
from robotrl.export.bundle import PolicySpec
from robotrl.runtime.policy_runner import NonFiniteActionError, NonFiniteObservationError, PolicyRunner
from robotrl_ros.messages import (
    COMMAND_QOS,
    LATCHED_QOS,
    RECORD_QOS,
    STATE_QOS,
    ReferenceWindow,
    joint_state,
    robot_state,
)
from robotrl_ros.runner import run_single

QUADROTOR_OBSERVATION_DIM = 22


def element_names(fields: list[tuple[str, int]]) -> list[str]:
    """One name per vector element: 'name' for a size-1 field, 'name.i' otherwise."""
    return [name if size == 1 else f"{name}.{i}" for name, size in fields for i in range(size)]


class PolicyNodeBase(Node):
    """The bundle, checked against the graph's rate and the subclass's observation layout; `act` and
    `publish` for the subclass's state callback."""

    def __init__(self, node_name: str, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        bundle = self.declare_parameter("bundle", "").value
        rate = self.declare_parameter("control_rate_hz", 100.0).value
        if not bundle:
            raise ValueError(f"{node_name} node: parameter 'bundle' (a policy bundle directory) is required")
        self.runner = PolicyRunner(bundle)
        if abs(self.runner.control_rate_hz - rate) > 1e-6:
            raise ValueError(
                f"policy node: bundle {bundle} runs at {self.runner.control_rate_hz} Hz, the graph runs "
                f"at {rate} Hz; set control_rate_hz in the deployment YAML to the bundle's rate"
            )
        policy = self.runner.spec.policy
        self.check_layout(bundle, policy)
        self.runner.reset(1)
        self.observation_names = element_names([(f.name, f.size) for f in policy.observation_fields])
        self.action_names = element_names([(f.name, f.size) for f in policy.action_fields])
        self.non_finite = 0
        self.action_pub = self.create_publisher(JointState, "/robotrl/policy/action", COMMAND_QOS)
        self.observation_pub = self.create_publisher(JointState, "/robotrl/policy/observation", RECORD_QOS)

    def check_layout(self, bundle: str, policy: PolicySpec) -> None:
        """Raise ValueError, saying why, when this node cannot build the bundle's observation."""
        raise NotImplementedError

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The policy's action for obs; NaN when the observation or the output is not finite, so that the
        safety chain falls back at once rather than after a watchdog timeout."""
        try:
            return self.runner.step(obs[None])[0]
        except (NonFiniteObservationError, NonFiniteActionError) as err:
            self.non_finite += 1
            if self.non_finite == 1:
                self.get_logger().error(f"{err}; publishing NaN so the safety chain falls back")
            return np.full(self.runner.action_dim, np.nan, np.float32)

    def publish(self, stamp: Time, action: np.ndarray, obs: np.ndarray | None) -> None:
        self.action_pub.publish(joint_state(stamp, self.action_names, effort=action))
        # The observation is for recorders: off the critical path, and only when one listens.
        if obs is not None and self.observation_pub.get_subscription_count():
            self.observation_pub.publish(joint_state(stamp, self.observation_names, position=obs))


class PolicyNode(PolicyNodeBase):
    def __init__(self, node_name: str = "policy", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.previous_action = np.zeros(self.runner.action_dim, np.float32)
        self.reference: ReferenceWindow | None = None
        self.create_subscription(Odometry, "/robotrl/state", self.on_state, STATE_QOS)
        self.create_subscription(
            MultiDOFJointTrajectory, "/robotrl/reference", self.on_reference, COMMAND_QOS
        )
        self.create_subscription(JointState, "/robotrl/motor_cmd", self.on_motor_cmd, COMMAND_QOS)
        self.create_subscription(UInt32, "/robotrl/episode", self.on_episode, LATCHED_QOS)
        policy = self.runner.spec.policy
        self.get_logger().info(f"policy node ready: {self.runner.bundle_dir} ({policy.task}, {policy.robot})")

    def check_layout(self, bundle: str, policy: PolicySpec) -> None:
        if policy.observation_dim != QUADROTOR_OBSERVATION_DIM:
            raise ValueError(
                f"policy node: bundle {bundle} takes {policy.observation_dim} observations; this node "
                f"builds the {QUADROTOR_OBSERVATION_DIM}-value quadrotor layout"
            )

    def on_reference(self, msg: MultiDOFJointTrajectory) -> None:
        try:
            self.reference = ReferenceWindow(msg)
        except ValueError as err:
            self.get_logger().error(f"ignoring reference: {err}")

    def on_episode(self, msg: UInt32) -> None:
        self.runner.reset(1)
        self.get_logger().debug(f"episode {msg.data}: recurrent state reset")

    def on_motor_cmd(self, msg: JointState) -> None:
        if len(msg.effort) == self.previous_action.size:
            self.previous_action = np.asarray(msg.effort, np.float32)

    def on_state(self, msg: Odometry) -> None:
        if self.reference is None:
            return  # nothing to track yet
        state = robot_state(msg)
        obs = quadrotor_observation(state, *self.reference.at(state.stamp_s), self.previous_action)
        self.publish(msg.header.stamp, self.act(obs), obs)


def main() -> None:
    run_single(PolicyNode)


if __name__ == "__main__":
    main()
