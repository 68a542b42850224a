"""Episodes of a deployed robot recorded to MCAP, and read back as training data that says who acted.

Learning from an operator's corrections (HIL-SERL style) needs, for every control step, the observation,
the action that was really taken and whether a human took it. The graph publishes each of them stamped
with the state they were built from. The recorder node (ros2_ws, rclpy) subscribes with ``raw=True`` and
hands the CDR bytes with their receive time to `EpisodeRecorder.write`: nothing here imports rclpy, and
nothing is deserialized on the robot. Tests and tools without ROS build the same messages with
`joint_state`, `intervention`, `odometry` and `episode_start` (rosbags' pure-Python typestore).

Recorded topics (a fixed contract; robotrl.deployment.TOPICS gives their QoS):

| topic | type | meaning |
|---|---|---|
| /robotrl/state | nav_msgs/msg/Odometry | robot state; pose in frame "world" (z-up), twist in child frame "base_link" (FLU, body) |
| /robotrl/policy/observation | sensor_msgs/msg/JointState | the policy's observation vector: header.stamp = stamp of the state it was built from, name = observation element names, position = values |
| /robotrl/policy/action | sensor_msgs/msg/JointState | the policy's raw action: header.stamp = the state's stamp, name = action element names (e.g. motor_fr, motor_br, motor_bl, motor_fl), effort = values in [-1, 1] |
| /robotrl/command | sensor_msgs/msg/JointState | the arbitrated action (policy or human), same layout as the policy action |
| /robotrl/intervention | diagnostic_msgs/msg/DiagnosticArray | who produced each /robotrl/command: header.stamp = the same state stamp as that command; one status named "intervention" whose message is "human" or "policy" and whose values hold KeyValue(key="source", value="human"/"policy") |
| /robotrl/motor_cmd | sensor_msgs/msg/JointState | the action after the safety filter (what the motors got), same layout |
| /robotrl/episode | std_msgs/msg/UInt32 | the episode index, published when a new episode starts |

`read_transitions` pairs the messages of a step by header stamp, never by arrival order: the topics go
through different nodes and QoS, so they arrive interleaved and some never arrive.
"""  # noqa: E501  (the contract table reads best one row a line)

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Generic, Self, TypeVar, cast

import numpy as np
import numpy.typing as npt
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, TypesysError, get_typestore
from rosbags.typesys.stores import ros2_jazzy

logger = logging.getLogger(__name__)

# The typestore's classes under their ROS names: deserializing gives instances of these.
Time = ros2_jazzy.builtin_interfaces__msg__Time
DiagnosticArray = ros2_jazzy.diagnostic_msgs__msg__DiagnosticArray
DiagnosticStatus = ros2_jazzy.diagnostic_msgs__msg__DiagnosticStatus
KeyValue = ros2_jazzy.diagnostic_msgs__msg__KeyValue
Point = ros2_jazzy.geometry_msgs__msg__Point
Pose = ros2_jazzy.geometry_msgs__msg__Pose
PoseWithCovariance = ros2_jazzy.geometry_msgs__msg__PoseWithCovariance
Quaternion = ros2_jazzy.geometry_msgs__msg__Quaternion
Twist = ros2_jazzy.geometry_msgs__msg__Twist
TwistWithCovariance = ros2_jazzy.geometry_msgs__msg__TwistWithCovariance
Vector3 = ros2_jazzy.geometry_msgs__msg__Vector3
Odometry = ros2_jazzy.nav_msgs__msg__Odometry
JointState = ros2_jazzy.sensor_msgs__msg__JointState
Header = ros2_jazzy.std_msgs__msg__Header
UInt32 = ros2_jazzy.std_msgs__msg__UInt32

STATE_TOPIC = "/robotrl/state"
OBSERVATION_TOPIC = "/robotrl/policy/observation"
POLICY_ACTION_TOPIC = "/robotrl/policy/action"
COMMAND_TOPIC = "/robotrl/command"
INTERVENTION_TOPIC = "/robotrl/intervention"
MOTOR_CMD_TOPIC = "/robotrl/motor_cmd"
EPISODE_TOPIC = "/robotrl/episode"
MSGTYPES: dict[str, str] = {
    STATE_TOPIC: "nav_msgs/msg/Odometry",
    OBSERVATION_TOPIC: "sensor_msgs/msg/JointState",
    POLICY_ACTION_TOPIC: "sensor_msgs/msg/JointState",
    COMMAND_TOPIC: "sensor_msgs/msg/JointState",
    INTERVENTION_TOPIC: "diagnostic_msgs/msg/DiagnosticArray",
    MOTOR_CMD_TOPIC: "sensor_msgs/msg/JointState",
    EPISODE_TOPIC: "std_msgs/msg/UInt32",
}
"""Type of each recorded topic, in the 'package/msg/Type' form that `EpisodeRecorder.write` takes."""
REQUIRED_TOPICS = (OBSERVATION_TOPIC, COMMAND_TOPIC, INTERVENTION_TOPIC)
"""Without these a recording holds no complete step."""

WORLD_FRAME = "world"
BODY_FRAME = "base_link"
INTERVENTION_STATUS = "intervention"
SOURCE_KEY = "source"
HUMAN = "human"
POLICY = "policy"

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
"""ROS 2 Jazzy definitions; the recorded types hash the same in Humble and Kilted."""
BAG_VERSION = 8
"""rosbag2 metadata version: the older of the two rosbags writes, so more `ros2 bag` releases read it."""
NS_PER_S = 1_000_000_000

DROP_REASONS = ("no_observation", "no_command", "no_intervention")
"""Why a stamp seen in the recording gave no step, in the order a step is checked."""


class RecordingError(ValueError):
    """The recording cannot be turned into transitions; the message says what is wrong and what to do."""


# ---------------------------------------------------------------------------------------------------------
# Messages, built the way the graph's nodes publish them
# ---------------------------------------------------------------------------------------------------------


def _header(stamp_ns: int, frame_id: str) -> Header:
    if stamp_ns < 0:
        raise ValueError(f"stamp_ns must be >= 0 (ns since the epoch), got {stamp_ns}")
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def _stamp_ns(header: Header) -> int:
    return header.stamp.sec * NS_PER_S + header.stamp.nanosec


def _vector(values: npt.ArrayLike | None, size: int, what: str) -> npt.NDArray[np.float64]:
    if values is None:
        return np.empty(0, dtype=np.float64)
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (size,):
        raise ValueError(f"{what} has shape {array.shape}, expected ({size},)")
    return array


def joint_state(
    stamp_ns: int,
    names: Sequence[str],
    position: npt.ArrayLike | None = None,
    effort: npt.ArrayLike | None = None,
) -> JointState:
    """An observation (values in `position`) or an action (values in `effort`); unused fields stay empty,
    as sensor_msgs/JointState allows."""
    return JointState(
        header=_header(stamp_ns, ""),
        name=list(names),
        position=_vector(position, len(names), "position (one value a name)"),
        velocity=np.empty(0, dtype=np.float64),
        effort=_vector(effort, len(names), "effort (one value a name)"),
    )


def intervention(stamp_ns: int, human: bool) -> DiagnosticArray:
    """Who produced the command stamped `stamp_ns`, as the intervention node publishes it (level OK)."""
    source = HUMAN if human else POLICY
    status = DiagnosticStatus(
        level=DiagnosticStatus.OK,
        name=INTERVENTION_STATUS,
        message=source,
        hardware_id="",
        values=[KeyValue(key=SOURCE_KEY, value=source)],
    )
    return DiagnosticArray(header=_header(stamp_ns, ""), status=[status])


def odometry(
    stamp_ns: int,
    position_w: npt.ArrayLike,
    quaternion_wxyz: npt.ArrayLike,
    linear_velocity_b: npt.ArrayLike,
    angular_velocity_b: npt.ArrayLike,
) -> Odometry:
    """The state as the bridge publishes it. The quaternion (body to world) comes in our w-first order and
    is stored in ROS's x, y, z, w fields; the covariances are left zero."""
    px, py, pz = _vector(position_w, 3, "position_w")
    qw, qx, qy, qz = _vector(quaternion_wxyz, 4, "quaternion_wxyz")
    vx, vy, vz = _vector(linear_velocity_b, 3, "linear_velocity_b")
    wx, wy, wz = _vector(angular_velocity_b, 3, "angular_velocity_b")
    return Odometry(
        header=_header(stamp_ns, WORLD_FRAME),
        child_frame_id=BODY_FRAME,
        pose=PoseWithCovariance(
            pose=Pose(position=Point(x=px, y=py, z=pz), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw)),
            covariance=np.zeros(36),
        ),
        twist=TwistWithCovariance(
            twist=Twist(linear=Vector3(x=vx, y=vy, z=vz), angular=Vector3(x=wx, y=wy, z=wz)),
            covariance=np.zeros(36),
        ),
    )


def episode_start(index: int) -> UInt32:
    """Published when an episode starts: the steps logged from then on belong to it."""
    return UInt32(data=index)


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


class EpisodeRecorder:
    """Writes one new rosbag2 bag (MCAP storage) of already-serialized messages.

    Connections are registered on a topic's first message, so the recorder needs no list of topics up
    front. Leaving the with-block always writes the index and metadata.yaml, also on an exception, so that
    the steps recorded before a crash can still be read. Calls may come from several executor threads.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(
                f"recording path {self.path} exists already: a recording is never overwritten or appended "
                "to; pick another path or delete that one"
            )
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._connections: dict[tuple[str, str], Connection] = {}
        self._lock = threading.Lock()
        self._is_open = False

    def open(self) -> None:
        try:
            self._writer.open()
        except WriterError as err:
            raise FileExistsError(f"{err} Pick another recording path or delete that one.") from err
        self._is_open = True

    def close(self) -> None:
        """Writes the MCAP summary and metadata.yaml; a second call does nothing."""
        with self._lock:
            if not self._is_open:
                return
            self._is_open = False
            try:
                self._writer.close()
            except BaseException:
                self._writer.abort()
                raise

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, topic: str, msgtype: str, data: bytes | memoryview, log_time_ns: int) -> None:
        """Records one CDR-serialized message as received: `msgtype` like 'sensor_msgs/msg/JointState',
        `log_time_ns` the receive time in ns since the epoch."""
        if log_time_ns < 0:
            raise ValueError(f"log_time_ns must be >= 0 (ns since the epoch), got {log_time_ns} on {topic}")
        with self._lock:
            if not self._is_open:
                raise RuntimeError(f"recorder for {self.path} is not open: use it in a with-block")
            connection = self._connections.get((topic, msgtype)) or self._add_connection(topic, msgtype)
            self._writer.write(connection, log_time_ns, data)

    def write_message(self, topic: str, msgtype: str, msg: object, log_time_ns: int) -> None:
        """Serializes a typestore message (see `joint_state` and friends) and records it."""
        if getattr(msg, "__msgtype__", None) != msgtype:
            raise ValueError(f"message for {topic} is a {type(msg).__name__}, not a {msgtype}")
        self.write(topic, msgtype, TYPESTORE.serialize_cdr(msg, msgtype), log_time_ns)

    def _add_connection(self, topic: str, msgtype: str) -> Connection:
        expected = MSGTYPES.get(topic, msgtype)
        if msgtype != expected:
            raise ValueError(f"{topic} carries {expected} in the robotrl graph, got {msgtype}")
        if msgtype not in TYPESTORE.types:
            raise ValueError(
                f"unknown message type {msgtype!r} on {topic}: give it as 'package/msg/Type' "
                "(e.g. 'sensor_msgs/msg/JointState'), one of the standard ROS 2 message packages"
            )
        connection = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE)
        self._connections[(topic, msgtype)] = connection
        return connection


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transitions:
    """A recording as training data: one row per complete control step, ordered by stamp.

    A step is complete with an observation, a command and an intervention flag of the same stamp. Rows of
    one episode follow each other; whether an episode ended in a terminal state or was cut short is not
    recorded, so `done` marks the end of the recorded trajectory only.
    """

    stamp_ns: npt.NDArray[np.int64]
    """[T] header stamp of the state the step was built from, ns since the epoch."""
    observation: npt.NDArray[np.float32]
    """[T, D] the policy's observation."""
    next_observation: npt.NDArray[np.float32]
    """[T, D] the next observation of the same episode, also one whose step was dropped (it is still what
    the robot saw next); the step's own observation where the episode has no later one."""
    action: npt.NDArray[np.float32]
    """[T, A] the arbitrated command: the policy's action, or the operator's during an intervention."""
    applied_action: npt.NDArray[np.float32]
    """[T, A] what the motors got after the safety filter; NaN rows where no motor_cmd has the stamp."""
    intervention: npt.NDArray[np.bool_]
    """[T] True where a human produced the command."""
    episode: npt.NDArray[np.int64]
    """[T] index of the last episode message logged at or before the step's first message; 0 before any."""
    done: npt.NDArray[np.bool_]
    """[T] True at the last row of each episode."""
    observation_names: tuple[str, ...]
    action_names: tuple[str, ...]
    dropped: dict[str, int]
    """Stamps that gave no row, by the first thing they lack (see DROP_REASONS)."""

    def __len__(self) -> int:
        return len(self.stamp_ns)

    @property
    def stamp_s(self) -> npt.NDArray[np.float64]:
        """[T] stamps in seconds since the epoch (float64: about 0.2 us resolution today)."""
        return self.stamp_ns * 1e-9


T = TypeVar("T")


@dataclass
class _Latest(Generic[T]):
    """The last-logged message of each stamp on one topic: a republished step replaces the earlier copy."""

    topic: str
    by_stamp: dict[int, tuple[int, T]] = field(default_factory=dict)
    duplicates: int = 0

    def put(self, stamp_ns: int, log_time_ns: int, value: T) -> None:
        previous = self.by_stamp.get(stamp_ns)
        if previous is not None:
            self.duplicates += 1
            if previous[0] > log_time_ns:
                return
        self.by_stamp[stamp_ns] = (log_time_ns, value)

    def get(self, stamp_ns: int) -> T | None:
        entry = self.by_stamp.get(stamp_ns)
        return None if entry is None else entry[1]


def read_transitions(bag_path: str | Path) -> Transitions:
    """Reads a recording (the bag directory, or its .mcap file alone) into `Transitions`."""
    path = Path(bag_path)
    if not path.exists():
        raise FileNotFoundError(
            f"no recording at {path}: pass the directory an EpisodeRecorder wrote (it holds metadata.yaml "
            "and a .mcap file) or that .mcap file"
        )
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise RecordingError(
            f"{path} is not a rosbag2 bag: it has no metadata.yaml. Pass the bag directory itself (not its "
            "parent), or the .mcap file inside it"
        )
    try:
        with Reader(path) as reader:
            return _read(reader, path)
    except (ReaderError, SerdeError, TypesysError) as err:
        raise RecordingError(
            f"{path} cannot be read as a rosbag2 recording: {err}. A bag whose recorder was killed before "
            "closing has no index; record again, or recover it with `mcap recover`"
        ) from err


def _read(reader: Reader, path: Path) -> Transitions:
    by_topic = {connection.topic: connection for connection in reader.connections}
    missing = [topic for topic in REQUIRED_TOPICS if topic not in by_topic]
    if missing:
        raise RecordingError(
            f"{path} lacks the topic(s) {missing} (it has {sorted(by_topic)}): check that the recorder "
            "subscribed to them and that the policy and intervention nodes ran while recording"
        )
    for topic, connection in by_topic.items():
        if topic in MSGTYPES and connection.msgtype != MSGTYPES[topic]:
            raise RecordingError(
                f"{path}: {topic} holds {connection.msgtype}, but the robotrl graph sends {MSGTYPES[topic]}"
            )
    vectors: dict[str, _Latest[npt.NDArray[np.float64]]] = {
        topic: _Latest(topic) for topic in (OBSERVATION_TOPIC, COMMAND_TOPIC, MOTOR_CMD_TOPIC)
    }
    flags: _Latest[bool] = _Latest(INTERVENTION_TOPIC)
    first_log_ns: dict[int, int] = {}
    episode_log: list[tuple[int, int]] = []
    names: dict[str, tuple[str, ...]] = {}
    wanted = [*vectors, INTERVENTION_TOPIC, EPISODE_TOPIC]
    connections = [by_topic[topic] for topic in wanted if topic in by_topic]
    for connection, log_time_ns, data in reader.messages(connections=connections):
        msg = TYPESTORE.deserialize_cdr(data, connection.msgtype)
        if connection.topic == EPISODE_TOPIC:
            episode_log.append((log_time_ns, cast(UInt32, msg).data))
            continue
        if connection.topic == INTERVENTION_TOPIC:
            array = cast(DiagnosticArray, msg)
            stamp_ns = _stamp_ns(array.header)
            human = _is_human(array, stamp_ns, path)
            if human is None:
                continue
            flags.put(stamp_ns, log_time_ns, human)
        else:
            state = cast(JointState, msg)
            stamp_ns = _stamp_ns(state.header)
            values = _joint_values(state, connection.topic, names, stamp_ns, path)
            vectors[connection.topic].put(stamp_ns, log_time_ns, values)
        first_log_ns[stamp_ns] = min(log_time_ns, first_log_ns.get(stamp_ns, log_time_ns))
    for latest in (*vectors.values(), flags):
        if latest.duplicates:
            logger.warning(
                "%s: %d repeated stamp(s) on %s, kept the last logged", path, latest.duplicates, latest.topic
            )
    return _assemble(vectors, flags, first_log_ns, episode_log, names)


def _is_human(array: DiagnosticArray, stamp_ns: int, path: Path) -> bool | None:
    """The source of the step's command; None when the array carries no intervention status."""
    for status in array.status:
        if status.name != INTERVENTION_STATUS:
            continue
        source = next((kv.value for kv in status.values if kv.key == SOURCE_KEY), status.message)
        if source not in (HUMAN, POLICY):
            raise RecordingError(
                f"{path}: {INTERVENTION_TOPIC} at stamp {stamp_ns} ns gives source {source!r}, "
                f"expected {HUMAN!r} or {POLICY!r}"
            )
        return source == HUMAN
    return None


def _joint_values(
    state: JointState, topic: str, names: dict[str, tuple[str, ...]], stamp_ns: int, path: Path
) -> npt.NDArray[np.float64]:
    """An observation's positions or an action's efforts, checked against the names seen first.

    Commands and motor commands share the action layout, so a reordered safety output is caught here.
    """
    layout, field_name = ("observation", "position") if topic == OBSERVATION_TOPIC else ("action", "effort")
    values: npt.NDArray[np.float64] = getattr(state, field_name)
    if len(values) != len(state.name):
        raise RecordingError(
            f"{path}: {topic} at stamp {stamp_ns} ns has {len(values)} {field_name} values for "
            f"{len(state.name)} names"
        )
    expected = names.setdefault(layout, tuple(state.name))
    if tuple(state.name) != expected:
        raise RecordingError(
            f"{path}: {topic} at stamp {stamp_ns} ns names {state.name}, but earlier {layout}s named "
            f"{list(expected)}; one recording holds one policy's layout, so record each policy apart"
        )
    return values


def _assemble(
    vectors: dict[str, _Latest[npt.NDArray[np.float64]]],
    flags: _Latest[bool],
    first_log_ns: dict[int, int],
    episode_log: list[tuple[int, int]],
    names: dict[str, tuple[str, ...]],
) -> Transitions:
    observations, commands = vectors[OBSERVATION_TOPIC], vectors[COMMAND_TOPIC]
    observation_names = names.get("observation", ())
    action_names = names.get("action", ())
    stamps = np.array(sorted(first_log_ns), dtype=np.int64)
    step_log_ns = np.array([first_log_ns[s] for s in stamps.tolist()], dtype=np.int64)
    episode_of_stamp = _episodes(step_log_ns, episode_log)

    dropped = dict.fromkeys(DROP_REASONS, 0)
    keep = np.zeros(len(stamps), dtype=bool)
    for i, stamp in enumerate(stamps.tolist()):
        present = (stamp in observations.by_stamp, stamp in commands.by_stamp, stamp in flags.by_stamp)
        reason = next((r for r, ok in zip(DROP_REASONS, present, strict=True) if not ok), None)
        if reason is None:
            keep[i] = True
        else:
            dropped[reason] += 1
    rows, episode = stamps[keep], episode_of_stamp[keep]

    # Every observation, a dropped step's too, is what the robot saw next within its episode.
    obs_stamps = np.array(sorted(observations.by_stamp), dtype=np.int64)
    obs_episode = episode_of_stamp[np.searchsorted(stamps, obs_stamps)]
    all_observations = _rows(observations, obs_stamps, len(observation_names))
    own = np.searchsorted(obs_stamps, rows)
    following = np.minimum(own + 1, len(obs_stamps) - 1)
    has_next = (own + 1 < len(obs_stamps)) & (obs_episode[following] == episode)

    done = np.ones(len(rows), dtype=bool)
    done[:-1] = episode[1:] != episode[:-1]
    return Transitions(
        stamp_ns=rows,
        observation=all_observations[own],
        next_observation=all_observations[np.where(has_next, following, own)],
        action=_rows(commands, rows, len(action_names)),
        applied_action=_rows(vectors[MOTOR_CMD_TOPIC], rows, len(action_names)),
        intervention=np.array([flags.get(s) for s in rows.tolist()], dtype=bool),
        episode=episode,
        done=done,
        observation_names=observation_names,
        action_names=action_names,
        dropped=dropped,
    )


def _rows(
    latest: _Latest[npt.NDArray[np.float64]], stamps: npt.NDArray[np.int64], width: int
) -> npt.NDArray[np.float32]:
    """The topic's values at `stamps`, NaN rows where it has none."""
    out = np.full((len(stamps), width), np.nan, dtype=np.float32)
    for i, stamp in enumerate(stamps.tolist()):
        values = latest.get(stamp)
        if values is not None:
            out[i] = values
    return out


def _episodes(
    step_log_ns: npt.NDArray[np.int64], episode_log: list[tuple[int, int]]
) -> npt.NDArray[np.int64]:
    """The episode of each step: the last episode message logged at or before the step's first message.

    Log times, not stamps, because the episode message has no header; both are the recorder's clock.
    """
    if not episode_log:
        return np.zeros(len(step_log_ns), dtype=np.int64)
    log_ns, index = (np.array(column, dtype=np.int64) for column in zip(*sorted(episode_log), strict=True))
    position = np.searchsorted(log_ns, step_log_ns, side="right") - 1
    return np.where(position >= 0, index[np.maximum(position, 0)], 0)
