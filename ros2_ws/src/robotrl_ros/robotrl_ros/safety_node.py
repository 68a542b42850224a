"""The safety chain between the commands and the motors, with its arming gate, e-stop and fallback.

It is also where an operator's commands override the policy's (the last node before the motors is
the one authority over them): /robotrl/teleop/command wins while it keeps coming. Each filtered
command is recorded with its source on /robotrl/command and /robotrl/intervention, when recorded.

Every command is filtered as it arrives and published at once, stamped with the state it answers.
When a state arrives and the two before it went unanswered, the chain steps on its own, so a silent
policy trips the stale-action watchdog within a period of its timeout (three periods or more on
both robots, so waiting for the third state costs no detection time) and the fallback keeps flying
without it; a slower timer does the same when the states stop too (the chain then lands or stops
the motors on its stale-state rule). A 100 Hz timer would do both, at the price of a callback ahead
of the commands in every period. Neither judges the policy on states it has not had the chance to
answer: when this node was not running (a CPU-starved machine, or the one-process graph frozen
whole), the sensor and the policy froze with it, the policy reads only the newest state, and the
messages queued meanwhile go first. The robot's limits must be at least as strict as the bundle's
training limits, or the node refuses to start.

`SafetyNodeBase` is all of that for any robot; a subclass says how the robot's state arrives, how its
chain is built and checked against the bundle, and how an action reaches the motors. `SafetyNode` is the
quadrotor's (joint_safety_node the quadruped's). Mode changes are kept in `mode_history` for reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from robotrl.deployment import RobotProfile, SafetyNodeConfig, load_robot_profile, quadrotor_safety_chain
from robotrl.export.bundle import BundleError, PolicySpec, read_bundle
from robotrl.hil.intervention import CommandArbiter
from robotrl.safety import Mode, SafetyChain, check_against_bundle
from robotrl.safety.filters import MeasuredState
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
UNANSWERED_STATES_TO_STEP = 3
"""A state arriving with two unanswered before it steps the chain (one can go unanswered in a stall)."""
LEVELS = {Mode.POLICY: DiagnosticStatus.OK, Mode.DISARMED: DiagnosticStatus.WARN,
          Mode.FALLBACK: DiagnosticStatus.ERROR, Mode.ESTOP: DiagnosticStatus.ERROR}  # fmt: skip


@dataclass(frozen=True)
class ModeChange:
    time_s: float
    """On the node's clock [s]."""
    before: Mode
    after: Mode
    reason: str
    """The latched fault (filter: reason) that caused it, '' for arming, e-stop or reset."""


class SafetyNodeBase(Node):
    """Arming, arbitration, the watchdog timer, services and status for the chain `build_chain` gives."""

    def __init__(self, node_name: str, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.config = declare_section(self, SafetyNodeConfig)
        rate = self.declare_parameter("control_rate_hz", 100.0).value
        robot_path = self.declare_parameter("robot", "").value
        bundle_path = self.declare_parameter("bundle", "").value
        self.period_s = 1.0 / rate
        policy = self._read_bundle(bundle_path)
        self.chain = self.build_chain(load_robot_profile(robot_path), rate, policy)
        self.bundle_ok = policy is not None
        self.state: MeasuredState | None = None
        self.action = np.asarray(self.chain.limits.stop_action, np.float32)
        self.action_stamp_s: float | None = None
        self.last_step_s = -np.inf
        self.unanswered_states = 0
        self.last_state_arrival_s = -np.inf
        self.last_tick_s = -np.inf
        self.skipped_tick = False
        self.latency_s: list[float] = []
        self.mode_history: list[ModeChange] = []
        self.episode = 0
        self.arm_refusal = ""

        self.motor_pub = self.create_publisher(JointState, "/robotrl/motor_cmd", COMMAND_QOS)
        self.status_pub = self.create_publisher(DiagnosticArray, "/robotrl/safety/status", RECORD_QOS)
        self.episode_pub = self.create_publisher(UInt32, "/robotrl/episode", LATCHED_QOS)
        self.command_pub = self.create_publisher(JointState, "/robotrl/command", RECORD_QOS)
        self.flag_pub = self.create_publisher(DiagnosticArray, "/robotrl/intervention", RECORD_QOS)
        self.arbiter = CommandArbiter(self.config.human_timeout_s)
        self.create_subscription(JointState, "/robotrl/policy/action", self.on_policy_action, COMMAND_QOS)
        self.create_subscription(JointState, "/robotrl/teleop/command", self.on_human_command, COMMAND_QOS)
        self.create_service(SetBool, "/robotrl/safety/arm", self.on_arm)
        self.create_service(Trigger, "/robotrl/safety/estop", self.on_estop)
        self.create_service(Trigger, "/robotrl/safety/reset", self.on_reset)
        self.create_timer(WATCHDOG_PERIOD_S, self.tick)
        self.create_timer(1.0 / self.config.status_rate_hz, self.publish_status)

    # ---------------------------------------------------------------- the robot's side (subclasses)
    def build_chain(self, robot: RobotProfile, rate_hz: float, policy: PolicySpec | None) -> SafetyChain:
        """The robot's chain; raise when its limits are looser than the bundle's (None: bundle refused)."""
        raise NotImplementedError

    def latest_state(self) -> MeasuredState | None:
        """The newest state, converted from its message(s) only now: the state callback sits in the
        executor's queue ahead of the command, so it does no more than keep the message."""
        raise NotImplementedError

    def chain_action(self, msg: JointState) -> np.ndarray:
        """The chain's action for a policy or operator command (the effort values)."""
        raise NotImplementedError

    def reference_position(self) -> np.ndarray | None:
        """The tracked position at the state's time, for robots that track one."""
        return None

    def motor_message(self, stamp: Time, action: np.ndarray) -> JointState:
        raise NotImplementedError

    # ---------------------------------------------------------------- inputs
    def _read_bundle(self, bundle_path: str) -> PolicySpec | None:
        """An unreadable bundle blocks arming (None), it does not stop the node."""
        try:
            return read_bundle(Path(bundle_path)).policy
        except (BundleError, OSError, ValueError) as err:
            self.get_logger().error(f"bundle refused, arming blocked: {err}")
            return None

    def on_new_state(self, stamp: Time) -> None:
        """A state arrived: step now if the commands stopped answering, so a dead policy is noticed."""
        now = now_s(self)
        self.last_state_arrival_s = now
        self.unanswered_states += 1
        if (
            self.unanswered_states >= UNANSWERED_STATES_TO_STEP
            and now - self.last_step_s > 0.5 * self.period_s
        ):
            self.step_and_publish(stamp)

    def on_policy_action(self, msg: JointState) -> None:
        if self.arbiter.human_active(now_s(self)):
            return  # the operator has the robot
        self.on_command(msg, human=False)

    def on_human_command(self, msg: JointState) -> None:
        self.arbiter.note_human(now_s(self))
        self.on_command(msg, human=True)

    def on_command(self, msg: JointState, human: bool) -> None:
        if len(msg.effort) != self.action.size:
            self.get_logger().error(
                f"command with {len(msg.effort)} values ignored; expected {self.action.size}"
            )
            return
        self.action, self.action_stamp_s = self.chain_action(msg), from_time(msg.header.stamp)
        self.unanswered_states = 0
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
        self.state = self.latest_state()
        before = self.chain.mode
        out = self.chain.step(
            self.state, self.action, now, self.reference_position(), action_stamp_s=self.action_stamp_s
        )
        self.motor_pub.publish(self.motor_message(stamp, out.action))
        self.last_step_s = now
        if out.mode is not before:
            reason = f"{out.fault.filter}: {out.fault.reason}" if out.fault else ""
            self.get_logger().warning(
                f"safety mode {before} -> {out.mode}" + (f": {reason}" if reason else "")
            )
            self.note_mode_change(before, out.mode, reason)
        return out.mode

    def note_mode_change(self, before: Mode, after: Mode, reason: str = "") -> None:
        """Every mode change goes into mode_history and out as a status at once."""
        self.mode_history.append(ModeChange(now_s(self), before, after, reason))
        self.publish_status()

    def tick(self) -> None:
        now = now_s(self)
        if self.config.auto_arm and self.chain.mode is Mode.DISARMED and self.chain.fault is None:
            self.try_arm(now)
        # Late by half a period or more: this node was not running. Once, let what queued meanwhile in first.
        late = now - self.last_tick_s >= 1.5 * WATCHDOG_PERIOD_S
        self.last_tick_s = now
        if late and not self.skipped_tick:
            self.skipped_tick = True
            return
        self.skipped_tick = False
        # A state that just arrived is the arrival rule's to judge (the policy may be answering it): the
        # tick steps for states that stopped coming, so a stall ending just after a tick is not a fault.
        states_stopped = now - self.last_state_arrival_s >= 1.5 * self.period_s
        unanswered = self.unanswered_states >= UNANSWERED_STATES_TO_STEP
        if now - self.last_step_s >= 1.5 * self.period_s and (states_stopped or unanswered):
            stamp = to_time(self.state.stamp_s) if self.state is not None else to_time(now)
            self.step_and_publish(stamp)

    def try_arm(self, now: float) -> tuple[bool, str]:
        before = self.chain.mode
        ok, why = self.chain.arm(self.bundle_ok, now)
        if ok and before is not Mode.POLICY:
            self.episode += 1
            self.episode_pub.publish(UInt32(data=self.episode))
            self.arm_refusal = ""
            self.get_logger().info(f"armed (episode {self.episode})")
            self.note_mode_change(before, self.chain.mode)
        elif not ok and why != self.arm_refusal:
            self.arm_refusal = why
        return ok, why

    # ---------------------------------------------------------------- services
    def on_arm(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            response.success, response.message = self.try_arm(now_s(self))
        else:
            self._reset()
            response.success, response.message = True, "disarmed"
        return response

    def on_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        before = self.chain.mode
        self.chain.estop("e-stop service")
        if before is not Mode.ESTOP:
            self.note_mode_change(before, Mode.ESTOP, "e-stop service")
        stamp = to_time(self.state.stamp_s) if self.state is not None else to_time(now_s(self))
        self.step_and_publish(stamp)  # the stop action now, not at the next period
        response.success, response.message = True, "e-stop latched; call /robotrl/safety/reset to clear"
        return response

    def on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._reset()
        response.success, response.message = True, "reset: disarmed, arm to run again"
        return response

    def _reset(self) -> None:
        before = self.chain.mode
        self.chain.reset()
        if before is not Mode.DISARMED:
            self.note_mode_change(before, Mode.DISARMED)

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


class SafetyNode(SafetyNodeBase):
    """The quadrotor: Odometry states, a reference to track, motor commands as effort."""

    def __init__(self, node_name: str = "safety", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.state_msg: Odometry | None = None
        self.reference: ReferenceWindow | None = None
        self.action_names = [f"motor_commands.{i}" for i in range(self.action.size)]
        self.create_subscription(Odometry, "/robotrl/state", self.on_state, STATE_QOS)
        self.create_subscription(
            MultiDOFJointTrajectory, "/robotrl/reference", self.on_reference, COMMAND_QOS
        )

    def build_chain(self, robot: RobotProfile, rate_hz: float, policy: PolicySpec | None) -> SafetyChain:
        chain = quadrotor_safety_chain(robot, rate_hz)
        if policy is not None:
            low = [f.low for f in policy.action_fields for _ in range(f.size)]
            high = [f.high for f in policy.action_fields for _ in range(f.size)]
            check_against_bundle(chain.limits, policy.safety_limits, low, high)  # type: ignore[arg-type]
        return chain

    def on_state(self, msg: Odometry) -> None:
        self.state_msg = msg
        self.on_new_state(msg.header.stamp)

    def on_reference(self, msg: MultiDOFJointTrajectory) -> None:
        try:
            self.reference = ReferenceWindow(msg)
        except ValueError as err:
            self.get_logger().error(f"ignoring reference: {err}")

    def latest_state(self) -> RobotState | None:
        if self.state_msg is not None:
            self.state, self.state_msg = robot_state(self.state_msg), None
        return self.state  # type: ignore[return-value]

    def reference_position(self) -> np.ndarray | None:
        if self.reference is None or self.state is None:
            return None
        return self.reference.at(self.state.stamp_s)[0]

    def chain_action(self, msg: JointState) -> np.ndarray:
        self.action_names = list(msg.name) or self.action_names
        return np.asarray(msg.effort, np.float32)

    def motor_message(self, stamp: Time, action: np.ndarray) -> JointState:
        return joint_state(stamp, self.action_names, effort=action)


def main() -> None:
    run_single(SafetyNode)


if __name__ == "__main__":
    main()
