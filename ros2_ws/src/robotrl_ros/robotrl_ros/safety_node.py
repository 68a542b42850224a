"""The safety chain between the commands and the motors, with its arming gate, e-stop and fallback.

It is also where an operator's commands override the policy's (the last node before the motors is
the one authority over them): /robotrl/teleop/command wins while it keeps coming. Each filtered
command is recorded with its source on /robotrl/command and /robotrl/intervention, when recorded.

Every command is filtered as it arrives and published at once, stamped with the state it answers.
When a state arrives and no command came for more than a period, the chain steps on its own, so a
silent policy trips the stale-action watchdog within a period of its timeout and the fallback keeps
flying without it; a slower timer does the same when the states stop too (the chain then lands or
stops the motors on its stale-state rule). A 100 Hz timer would do both, at the price of a callback
ahead of the commands in every period. The robot's limits
must be at least as strict as the bundle's training limits, or the node refuses to start.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import UInt32
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory

from robotrl.control.state import RobotState
from robotrl.deployment import SafetyNodeConfig, load_robot_profile, quadrotor_safety_chain
from robotrl.export.bundle import BundleError, read_bundle
from robotrl.hil.intervention import CommandArbiter
from robotrl.safety import Mode, SafetyLimits, check_against_bundle
from robotrl_ros.messages import (
    COMMAND_QOS,
    LATCHED_QOS,
    RECORD_QOS,
    STATE_QOS,
    ReferenceWindow,
    declare_section,
    from_time,
    intervention_status,
    joint_state,
    now_s,
    robot_state,
    to_time,
)
from robotrl_ros.runner import run_single

WATCHDOG_PERIOD_S = 0.02
"""Steps the chain when neither commands nor states arrive (a dead bridge or sensor)."""
LEVELS = {Mode.POLICY: DiagnosticStatus.OK, Mode.DISARMED: DiagnosticStatus.WARN,
          Mode.FALLBACK: DiagnosticStatus.ERROR, Mode.ESTOP: DiagnosticStatus.ERROR}  # fmt: skip


class SafetyNode(Node):
    def __init__(self, node_name: str = "safety", **kwargs):
        super().__init__(node_name, **kwargs)
        self.config = declare_section(self, SafetyNodeConfig)
        rate = self.declare_parameter("control_rate_hz", 100.0).value
        robot_path = self.declare_parameter("robot", "").value
        bundle_path = self.declare_parameter("bundle", "").value
        robot = load_robot_profile(robot_path)
        self.chain = quadrotor_safety_chain(robot, rate)
        limits = self.chain.limits
        self.bundle_ok = self._check_bundle(bundle_path, limits)
        self.period_s = 1.0 / rate
        self.state_msg: Odometry | None = None
        self.state: RobotState | None = None
        self.reference: ReferenceWindow | None = None
        self.action = np.asarray(limits.stop_action, np.float32)
        self.action_stamp_s: float | None = None
        self.action_names = [f"motor_commands.{i}" for i in range(self.action.size)]
        self.last_step_s = -np.inf
        self.last_command_s = -np.inf
        self.latency_s: list[float] = []
        self.episode = 0
        self.arm_refusal = ""

        self.motor_pub = self.create_publisher(JointState, "/robotrl/motor_cmd", COMMAND_QOS)
        self.status_pub = self.create_publisher(DiagnosticArray, "/robotrl/safety/status", RECORD_QOS)
        self.episode_pub = self.create_publisher(UInt32, "/robotrl/episode", LATCHED_QOS)
        self.create_subscription(Odometry, "/robotrl/state", self.on_state, STATE_QOS)
        self.command_pub = self.create_publisher(JointState, "/robotrl/command", RECORD_QOS)
        self.flag_pub = self.create_publisher(DiagnosticArray, "/robotrl/intervention", RECORD_QOS)
        self.arbiter = CommandArbiter(self.config.human_timeout_s)
        self.create_subscription(JointState, "/robotrl/policy/action", self.on_policy_action, COMMAND_QOS)
        self.create_subscription(JointState, "/robotrl/teleop/command", self.on_human_command, COMMAND_QOS)
        self.create_subscription(
            MultiDOFJointTrajectory, "/robotrl/reference", self.on_reference, COMMAND_QOS
        )
        self.create_service(SetBool, "/robotrl/safety/arm", self.on_arm)
        self.create_service(Trigger, "/robotrl/safety/estop", self.on_estop)
        self.create_service(Trigger, "/robotrl/safety/reset", self.on_reset)
        self.create_timer(WATCHDOG_PERIOD_S, self.tick)
        self.create_timer(1.0 / self.config.status_rate_hz, self.publish_status)

    def _check_bundle(self, bundle_path: str, limits: SafetyLimits) -> bool:
        """An unreadable bundle blocks arming; limits looser than its training limits stop the node."""
        try:
            policy = read_bundle(Path(bundle_path)).policy
        except (BundleError, OSError, ValueError) as err:
            self.get_logger().error(f"bundle refused, arming blocked: {err}")
            return False
        low = [f.low for f in policy.action_fields for _ in range(f.size)]
        high = [f.high for f in policy.action_fields for _ in range(f.size)]
        check_against_bundle(limits, policy.safety_limits, low, high)
        return True

    # ---------------------------------------------------------------- inputs
    def on_state(self, msg: Odometry) -> None:
        # Converted when the chain next steps: this callback sits in the queue ahead of the command.
        self.state_msg = msg
        now = now_s(self)
        if now - self.last_command_s > 1.5 * self.period_s and now - self.last_step_s > 0.5 * self.period_s:
            self.step_and_publish(msg.header.stamp)

    def on_reference(self, msg: MultiDOFJointTrajectory) -> None:
        try:
            self.reference = ReferenceWindow(msg)
        except ValueError as err:
            self.get_logger().error(f"ignoring reference: {err}")

    def on_policy_action(self, msg: JointState) -> None:
        if self.arbiter.human_active(now_s(self)):
            return  # the operator has the robot
        self.on_command(msg, human=False)

    def on_human_command(self, msg: JointState) -> None:
        self.arbiter.note_human(now_s(self))
        self.on_command(msg, human=True)

    def on_command(self, msg: JointState, human: bool) -> None:
        effort = np.asarray(msg.effort, np.float32)
        if effort.shape != self.action.shape:
            self.get_logger().error(f"command with {effort.size} values ignored; expected {self.action.size}")
            return
        self.action, self.action_stamp_s = effort, from_time(msg.header.stamp)
        self.last_command_s = now_s(self)
        self.action_names = list(msg.name) or self.action_names
        if self.step_and_publish(msg.header.stamp) is Mode.POLICY and not human:
            self.latency_s.append(now_s(self) - self.action_stamp_s)
        # For recorders only, after the motors got theirs: what was commanded, and by whom.
        if self.command_pub.get_subscription_count():
            self.command_pub.publish(msg)
        if self.flag_pub.get_subscription_count():
            self.flag_pub.publish(intervention_status(msg.header.stamp, human))

    # ---------------------------------------------------------------- the chain
    def step_and_publish(self, stamp: Time) -> Mode:
        now = now_s(self)
        if self.state_msg is not None:
            self.state, self.state_msg = robot_state(self.state_msg), None
        before = self.chain.mode
        reference = None
        if self.reference is not None and self.state is not None:
            reference = self.reference.at(self.state.stamp_s)[0]
        out = self.chain.step(self.state, self.action, now, reference, action_stamp_s=self.action_stamp_s)
        self.motor_pub.publish(joint_state(stamp, self.action_names, effort=out.action))
        self.last_step_s = now
        if out.mode is not before:
            reason = f": {out.fault.filter}: {out.fault.reason}" if out.fault else ""
            self.get_logger().warning(f"safety mode {before} -> {out.mode}{reason}")
            self.publish_status()
        return out.mode

    def tick(self) -> None:
        now = now_s(self)
        if self.config.auto_arm and self.chain.mode is Mode.DISARMED and self.chain.fault is None:
            self.try_arm(now)
        if now - self.last_step_s >= 1.5 * self.period_s:
            stamp = to_time(self.state.stamp_s) if self.state is not None else to_time(now)
            self.step_and_publish(stamp)

    def try_arm(self, now: float) -> tuple[bool, str]:
        ok, why = self.chain.arm(self.bundle_ok, now)
        if ok:
            self.episode += 1
            self.episode_pub.publish(UInt32(data=self.episode))
            self.arm_refusal = ""
            self.get_logger().info(f"armed (episode {self.episode})")
        elif why != self.arm_refusal:
            self.arm_refusal = why
        return ok, why

    # ---------------------------------------------------------------- services
    def on_arm(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            response.success, response.message = self.try_arm(now_s(self))
        else:
            self.chain.reset()
            response.success, response.message = True, "disarmed"
        return response

    def on_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.chain.estop("e-stop service")
        stamp = to_time(self.state.stamp_s) if self.state is not None else to_time(now_s(self))
        self.step_and_publish(stamp)  # motors to zero now, not at the next period
        response.success, response.message = True, "e-stop latched; call /robotrl/safety/reset to clear"
        return response

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.chain.reset()
        response.success, response.message = True, "reset: disarmed, arm to fly again"
        return response

    def publish_status(self) -> None:
        chain = self.chain
        values = {"mode": str(chain.mode), "bundle_ok": str(self.bundle_ok), "arm_refusal": self.arm_refusal}
        if chain.fault is not None:
            values.update(
                fault_filter=chain.fault.filter,
                fault=chain.fault.reason,
                fault_time_s=f"{chain.fault.time_s:.3f}",
            )
        msg = DiagnosticArray()
        msg.header.stamp = to_time(now_s(self))
        msg.status = [
            DiagnosticStatus(
                level=LEVELS[chain.mode],
                name="safety",
                message=str(chain.mode) + (f": {chain.fault.reason}" if chain.fault else ""),
                values=[KeyValue(key=k, value=v) for k, v in values.items()],
            )
        ]
        self.status_pub.publish(msg)


def main() -> None:
    run_single(SafetyNode)


if __name__ == "__main__":
    main()
