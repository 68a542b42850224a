"""Message <-> robotrl conversions, QoS profiles and parameter plumbing shared by every node.

Topic names, types and QoS are fixed in `robotrl.deployment.TOPICS` (the README's table); the
profiles here are the code side of that table.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Transform, Twist, Vector3
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Imu, JointState
from trajectory_msgs.msg import MultiDOFJointTrajectory, MultiDOFJointTrajectoryPoint

from robotrl.control.legged import JointProfile, LeggedState
from robotrl.control.state import RobotState, quaternion_wxyz_to_rotation, rotation_to_quaternion_wxyz

T = TypeVar("T")

STATE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
COMMAND_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
RECORD_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LATCHED_QOS = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)

WORLD_FRAME = "world"
BODY_FRAME = "base_link"


def message_class(msgtype: str) -> type:
    """The rclpy message class of 'package/msg/Type' (rosidl_runtime_py is not on PyPI)."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def now_s(node: Node) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


def to_time(stamp_s: float) -> Time:
    ns = round(stamp_s * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def from_time(stamp: Time) -> float:
    return stamp_ns(stamp) * 1e-9


def odometry(state: RobotState) -> Odometry:
    """nav_msgs convention: pose in the world frame, twist in the body (child) frame."""
    msg = Odometry()
    msg.header.stamp = to_time(state.stamp_s)
    msg.header.frame_id = WORLD_FRAME
    msg.child_frame_id = BODY_FRAME
    p = msg.pose.pose.position
    p.x, p.y, p.z = (float(v) for v in state.position_w)
    q = rotation_to_quaternion_wxyz(state.rotation_wb)
    o = msg.pose.pose.orientation
    o.w, o.x, o.y, o.z = (float(v) for v in q)
    v_b = np.asarray(state.rotation_wb).T @ np.asarray(state.velocity_w)
    lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
    lin.x, lin.y, lin.z = (float(v) for v in v_b)
    ang.x, ang.y, ang.z = (float(v) for v in state.angular_velocity_b)
    return msg


def robot_state(msg: Odometry) -> RobotState:
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
    quat = np.array((o.w, o.x, o.y, o.z))
    # A zero or non-finite quaternion is a broken message: report NaNs and let the safety chain act.
    norm2 = float(quat @ quat)
    rot = quaternion_wxyz_to_rotation(quat) if 1e-12 < norm2 < np.inf else np.full((3, 3), np.nan)
    return RobotState(
        stamp_s=from_time(msg.header.stamp),
        position_w=np.array((p.x, p.y, p.z)),
        velocity_w=rot @ np.array((lin.x, lin.y, lin.z)),
        rotation_wb=rot,
        angular_velocity_b=np.array((ang.x, ang.y, ang.z)),
    )


def reference_message(
    stamp: Time, dt_s: float, positions_w: np.ndarray, velocities_w: np.ndarray
) -> MultiDOFJointTrajectory:
    """The setpoint from `stamp` on, one point every dt_s (position and velocity, world frame).

    A window of the future, not a single point: consumers evaluate it at their own state's time, so
    the reference can be published far slower than the control rate and stays on time.
    """
    msg = MultiDOFJointTrajectory()
    msg.header.stamp = stamp
    msg.header.frame_id = WORLD_FRAME
    msg.joint_names = [BODY_FRAME]
    points = []
    for k, (p, v) in enumerate(zip(positions_w.tolist(), velocities_w.tolist(), strict=True)):
        point = MultiDOFJointTrajectoryPoint()
        point.transforms = [Transform(translation=Vector3(x=p[0], y=p[1], z=p[2]))]
        point.velocities = [Twist(linear=Vector3(x=v[0], y=v[1], z=v[2]))]
        ns = round(k * dt_s * 1e9)
        point.time_from_start = Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        points.append(point)
    msg.points = points
    return msg


class ReferenceWindow:
    """A received reference, held as arrays and evaluated at any time inside it (linear interpolation)."""

    def __init__(self, msg: MultiDOFJointTrajectory):
        if not msg.points or any(not p.transforms for p in msg.points):
            raise ValueError("reference message has no points, or a point without a transform")
        start = from_time(msg.header.stamp)
        self.times_s = start + np.array([p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec
                                         for p in msg.points])  # fmt: skip
        t = [p.transforms[0].translation for p in msg.points]
        self.positions_w = np.array([(v.x, v.y, v.z) for v in t])
        lin = [p.velocities[0].linear if p.velocities else Vector3() for p in msg.points]
        self.velocities_w = np.array([(v.x, v.y, v.z) for v in lin])
        if not (np.isfinite(self.positions_w).all() and np.isfinite(self.velocities_w).all()):
            raise ValueError("reference message holds non-finite values")

    def at(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Setpoint at t_s; before the window its first point, after it the last (the reference is late)."""
        times = self.times_s
        if times.size == 1 or t_s <= times[0]:
            return self.positions_w[0], self.velocities_w[0]
        if t_s >= times[-1]:
            return self.positions_w[-1], self.velocities_w[-1]
        k = int(np.searchsorted(times, t_s)) - 1
        w = (t_s - times[k]) / (times[k + 1] - times[k])
        return (
            (1 - w) * self.positions_w[k] + w * self.positions_w[k + 1],
            (1 - w) * self.velocities_w[k] + w * self.velocities_w[k + 1],
        )


def joint_state(stamp: Time, names: list[str], effort: np.ndarray | None = None,
                position: np.ndarray | None = None) -> JointState:  # fmt: skip
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(names)
    if effort is not None:
        msg.effort = [float(v) for v in effort]
    if position is not None:
        msg.position = [float(v) for v in position]
    return msg


def legged_messages(
    state: LeggedState, stamp: Time, joints: JointProfile
) -> tuple[JointState, Imu, JointState]:
    """A legged robot's state as its three messages: joint states, IMU, foot contacts (see TOPICS)."""
    joint_msg = joint_state(stamp, list(joints.names), effort=state.joint_torque, position=state.joint_pos)
    joint_msg.velocity = [float(v) for v in state.joint_vel]
    imu = Imu()
    imu.header.stamp = stamp
    imu.header.frame_id = BODY_FRAME
    o, w = imu.orientation, imu.angular_velocity
    o.w, o.x, o.y, o.z = (float(v) for v in state.quat_wxyz)
    w.x, w.y, w.z = (float(v) for v in state.angular_velocity_b)
    imu.linear_acceleration_covariance[0] = -1.0  # sensor_msgs/Imu: -1 = not provided
    contacts = joint_state(stamp, list(joints.foot_names), effort=state.foot_force_n)
    return joint_msg, imu, contacts


def legged_state(joint_msg: JointState, imu: Imu, contacts: JointState, joints: JointProfile) -> LeggedState:
    """The three messages of one control period as a LeggedState; names out of the profile's order or
    missing values are wiring errors (ValueError)."""
    if list(joint_msg.name) != list(joints.names) or list(contacts.name) != list(joints.foot_names):
        raise ValueError(
            f"joint states name {list(joint_msg.name)} and foot contacts {list(contacts.name)}; the robot "
            f"profile has {list(joints.names)} and {list(joints.foot_names)}"
        )
    n = joints.num_joints
    if len(joint_msg.position) != n or len(joint_msg.velocity) != n:
        raise ValueError(f"joint states need {n} positions and velocities, got {len(joint_msg.position)}, "
                         f"{len(joint_msg.velocity)}")  # fmt: skip
    o, w = imu.orientation, imu.angular_velocity
    effort = joint_msg.effort if len(joint_msg.effort) == n else [np.nan] * n
    return LeggedState(
        stamp_s=from_time(joint_msg.header.stamp),
        joint_pos=np.asarray(joint_msg.position, np.float64),
        joint_vel=np.asarray(joint_msg.velocity, np.float64),
        joint_torque=np.asarray(effort, np.float64),
        quat_wxyz=np.array((o.w, o.x, o.y, o.z)),
        angular_velocity_b=np.array((w.x, w.y, w.z)),
        foot_force_n=np.asarray(contacts.effort, np.float64),
    )


class LeggedStateSync:
    """A legged robot's joint states, IMU and foot contacts, put together: one set is complete when all
    three carry the same stamp (a bridge publishes them together each period, as one LowState packet of a
    Unitree robot carries all three), and `on_complete(stamp)` runs once per complete set."""

    def __init__(self, node: Node, joints: JointProfile, on_complete: Callable[[Time], None]):
        self.joints = joints
        self.on_complete = on_complete
        self.logger = node.get_logger()
        self.joint_msg: JointState | None = None
        self.imu: Imu | None = None
        self.contacts: JointState | None = None
        self._complete: tuple[JointState, Imu, JointState] | None = None
        self._complete_ns: int | None = None
        self._state: LeggedState | None = None
        node.create_subscription(JointState, "/robotrl/joint_states", self.on_joint_states, STATE_QOS)
        node.create_subscription(Imu, "/robotrl/imu", self.on_imu, STATE_QOS)
        node.create_subscription(JointState, "/robotrl/foot_contacts", self.on_foot_contacts, STATE_QOS)

    def on_joint_states(self, msg: JointState) -> None:
        self.joint_msg = msg
        self._check()

    def on_imu(self, msg: Imu) -> None:
        self.imu = msg
        self._check()

    def on_foot_contacts(self, msg: JointState) -> None:
        self.contacts = msg
        self._check()

    def _check(self) -> None:
        if self.joint_msg is None or self.imu is None or self.contacts is None:
            return
        stamp = self.joint_msg.header.stamp
        ns = stamp_ns(stamp)
        if ns == self._complete_ns or ns != stamp_ns(self.imu.header.stamp):
            return
        if ns == stamp_ns(self.contacts.header.stamp):
            self._complete = (self.joint_msg, self.imu, self.contacts)
            self._complete_ns, self._state = ns, None
            self.on_complete(stamp)

    def state(self) -> LeggedState | None:
        """The last complete set as a state (converted once); None before the first, or when the set does
        not fit the robot profile (logged): to a consumer, a robot without a usable state."""
        if self._state is None and self._complete is not None:
            try:
                self._state = legged_state(*self._complete, self.joints)
            except ValueError as err:
                self.logger.error(f"ignoring the robot's state: {err}")
                self._complete = None
        return self._state


def intervention_status(stamp: Time, human: bool) -> DiagnosticArray:
    source = "human" if human else "policy"
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = [
        DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name="intervention",
            message=source,
            values=[KeyValue(key="source", value=source)],
        )
    ]
    return msg


def declare_section(node: Node, cls: type[T]) -> T:
    """Declare one ROS parameter per field of a config dataclass (its default as the default) and
    build the dataclass from their values, so a node's parameters and the deployment YAML agree."""
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        node.declare_parameter(f.name, list(default) if isinstance(default, tuple) else default)
    return read_section(node, cls)


def read_section(node: Node, cls: type[T]) -> T:
    """The dataclass of a declared section from the parameters' current values (`ros2 param set` ones too)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = node.get_parameter(f.name).value
        values[f.name] = tuple(value) if typing.get_origin(hints[f.name]) is tuple else value
    return cls(**values)
