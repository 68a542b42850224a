"""Episode recording to MCAP and reading it back as transitions with intervention flags.

The scripted recording has two episodes, operator takeovers at known steps, topics logged with different
latencies and written out of order, a republished command and a few messages missing, so every field of
`Transitions` has a hand-written expected value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from robotrl.hil.recording import (
    COMMAND_TOPIC,
    EPISODE_TOPIC,
    INTERVENTION_TOPIC,
    MOTOR_CMD_TOPIC,
    MSGTYPES,
    OBSERVATION_TOPIC,
    POLICY_ACTION_TOPIC,
    STATE_TOPIC,
    TYPESTORE,
    EpisodeRecorder,
    RecordingError,
    episode_start,
    intervention,
    joint_state,
    odometry,
    read_transitions,
)

MCAP_MAGIC = b"\x89MCAP0\r\n"
T0_NS = 1_700_000_000_000_000_000
PERIOD_NS = 10_000_000
MS = 1_000_000
OBS_NAMES = ("pos_x_w", "pos_z_w", "vel_z_w")
ACTION_NAMES = ("motor_fr", "motor_br", "motor_bl", "motor_fl")
NUM_STEPS = 12
EPISODE_STARTS = {0: 1, 6: 2}
"""Step -> index of the episode that starts there."""
HUMAN_STEPS = {2, 3, 8}
NO_MOTOR_CMD = 4
MISSING = {7: OBSERVATION_TOPIC, NO_MOTOR_CMD: MOTOR_CMD_TOPIC, 10: COMMAND_TOPIC, 11: INTERVENTION_TOPIC}
"""Step -> the topic whose message never arrived."""
LATENCY_NS = {
    STATE_TOPIC: MS // 2,
    OBSERVATION_TOPIC: MS,
    POLICY_ACTION_TOPIC: 2 * MS,
    INTERVENTION_TOPIC: 2 * MS + MS // 2,
    COMMAND_TOPIC: 3 * MS,
    MOTOR_CMD_TOPIC: 4 * MS,
}
"""Receive time minus stamp: the intervention flag arrives before the command it describes."""


def stamp(step: int) -> int:
    return T0_NS + step * PERIOD_NS


def observation(step: int) -> np.ndarray:
    return np.array([step, -step, 0.25 * step], dtype=np.float32)


def policy_action(step: int) -> np.ndarray:
    return np.array([0.1, 0.2, -0.1, -0.2], dtype=np.float32) + np.float32(0.01 * step)


def command(step: int) -> np.ndarray:
    human = np.array([0.75, -0.75, 0.5, -0.5], dtype=np.float32)
    return human if step in HUMAN_STEPS else policy_action(step)


def motor_cmd(step: int) -> np.ndarray:
    return np.clip(command(step), -0.6, 0.6)


def scripted_messages() -> list[tuple[str, object, int]]:
    """(topic, message, log time) of the whole recording, in log-time order."""
    messages: list[tuple[str, object, int]] = []
    for step in range(NUM_STEPS):
        if step in EPISODE_STARTS:
            messages.append((EPISODE_TOPIC, episode_start(EPISODE_STARTS[step]), stamp(step) - MS // 4))
        by_topic = {
            STATE_TOPIC: odometry(
                stamp(step), [0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0, 0, 0]
            ),
            OBSERVATION_TOPIC: joint_state(stamp(step), OBS_NAMES, position=observation(step)),
            POLICY_ACTION_TOPIC: joint_state(stamp(step), ACTION_NAMES, effort=policy_action(step)),
            INTERVENTION_TOPIC: intervention(stamp(step), human=step in HUMAN_STEPS),
            COMMAND_TOPIC: joint_state(stamp(step), ACTION_NAMES, effort=command(step)),
            MOTOR_CMD_TOPIC: joint_state(stamp(step), ACTION_NAMES, effort=motor_cmd(step)),
        }
        by_topic.pop(MISSING.get(step, ""), None)
        messages += [(topic, msg, stamp(step) + LATENCY_NS[topic]) for topic, msg in by_topic.items()]
    # A stale copy of step 1's command, logged before the one that counts.
    stale = joint_state(stamp(1), ACTION_NAMES, effort=np.zeros(4))
    messages.append((COMMAND_TOPIC, stale, stamp(1) + LATENCY_NS[COMMAND_TOPIC] - MS // 2))
    return sorted(messages, key=lambda m: m[2])


def record(recorder: EpisodeRecorder, topic: str, msg: object, log_time_ns: int) -> None:
    recorder.write_message(topic, MSGTYPES[topic], msg, log_time_ns)


def write_recording(path: Path) -> None:
    """Writes the script in a shuffled order; motor commands go through the raw-bytes path the node uses."""
    messages = scripted_messages()
    order = np.random.default_rng(0).permutation(len(messages))
    with EpisodeRecorder(path) as recorder:
        for i in order.tolist():
            topic, msg, log_time_ns = messages[i]
            if topic == MOTOR_CMD_TOPIC:
                data = bytes(TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
                recorder.write(topic, "sensor_msgs/msg/JointState", data, log_time_ns)
            else:
                record(recorder, topic, msg, log_time_ns)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recordings") / "flight"
    write_recording(path)
    return path


def test_round_trip_pairs_steps_by_stamp(bag: Path) -> None:
    data = read_transitions(bag)
    kept = [0, 1, 2, 3, 4, 5, 6, 8, 9]
    # Step 5 ends episode 1 (its own observation); step 9's next is step 10's, whose step was dropped.
    next_step = [1, 2, 3, 4, 5, 5, 8, 9, 10]

    assert len(data) == len(kept)
    assert data.dropped == {"no_observation": 1, "no_command": 1, "no_intervention": 1}
    np.testing.assert_array_equal(data.stamp_ns, [stamp(k) for k in kept])
    np.testing.assert_allclose(data.stamp_s, [stamp(k) * 1e-9 for k in kept])
    assert data.observation_names == OBS_NAMES
    assert data.action_names == ACTION_NAMES
    assert data.observation.dtype == np.float32 and data.action.dtype == np.float32
    np.testing.assert_array_equal(data.observation, [observation(k) for k in kept])
    np.testing.assert_array_equal(data.next_observation, [observation(k) for k in next_step])
    np.testing.assert_array_equal(data.action, [command(k) for k in kept])
    np.testing.assert_array_equal(data.intervention, [k in HUMAN_STEPS for k in kept])
    np.testing.assert_array_equal(data.episode, [1, 1, 1, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(data.done, [False] * 5 + [True, False, False, True])

    applied = data.applied_action
    assert np.isnan(applied[kept.index(NO_MOTOR_CMD)]).all()
    with_motor = [i for i, k in enumerate(kept) if k != NO_MOTOR_CMD]
    np.testing.assert_array_equal(applied[with_motor], [motor_cmd(kept[i]) for i in with_motor])


def test_the_mcap_file_alone_reads_the_same(bag: Path) -> None:
    whole, alone = read_transitions(bag), read_transitions(bag / f"{bag.name}.mcap")
    np.testing.assert_array_equal(whole.stamp_ns, alone.stamp_ns)
    np.testing.assert_array_equal(whole.action, alone.action)
    np.testing.assert_array_equal(whole.intervention, alone.intervention)


def test_storage_is_mcap(bag: Path) -> None:
    content = (bag / f"{bag.name}.mcap").read_bytes()
    assert content.startswith(MCAP_MAGIC)
    assert content.endswith(MCAP_MAGIC)
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["storage_identifier"] == "mcap"


def test_exception_inside_the_with_block_leaves_a_readable_bag(tmp_path: Path) -> None:
    path = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="operator pulled the plug"), EpisodeRecorder(path) as recorder:
        for step in range(3):
            record(
                recorder,
                OBSERVATION_TOPIC,
                joint_state(stamp(step), OBS_NAMES, observation(step)),
                stamp(step),
            )
            record(
                recorder,
                COMMAND_TOPIC,
                joint_state(stamp(step), ACTION_NAMES, effort=command(step)),
                stamp(step),
            )
            record(recorder, INTERVENTION_TOPIC, intervention(stamp(step), human=step == 1), stamp(step))
        raise RuntimeError("operator pulled the plug")

    data = read_transitions(path)
    np.testing.assert_array_equal(data.action, [command(k) for k in range(3)])
    np.testing.assert_array_equal(data.intervention, [False, True, False])
    np.testing.assert_array_equal(data.episode, [0, 0, 0])
    np.testing.assert_array_equal(data.done, [False, False, True])
    assert np.isnan(data.applied_action).all()


def test_refuses_an_existing_path(bag: Path) -> None:
    with pytest.raises(FileExistsError, match="pick another path or delete"):
        EpisodeRecorder(bag)


def test_refuses_a_type_the_graph_does_not_send(tmp_path: Path) -> None:
    with (
        EpisodeRecorder(tmp_path / "bag") as recorder,
        pytest.raises(ValueError, match="sensor_msgs/msg/JointState"),
    ):
        recorder.write_message(COMMAND_TOPIC, "std_msgs/msg/UInt32", episode_start(3), T0_NS)


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no recording at .*nowhere"):
        read_transitions(tmp_path / "nowhere")


def test_directory_that_is_not_a_bag(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"no metadata\.yaml"):
        read_transitions(tmp_path)


def test_file_that_is_not_a_bag(tmp_path: Path) -> None:
    fake = tmp_path / "flight.mcap"
    fake.write_bytes(b"not an mcap file")
    with pytest.raises(RecordingError, match="cannot be read as a rosbag2 recording"):
        read_transitions(fake)


def test_missing_topics_are_named(tmp_path: Path) -> None:
    path = tmp_path / "observations_only"
    with EpisodeRecorder(path) as recorder:
        record(recorder, OBSERVATION_TOPIC, joint_state(stamp(0), OBS_NAMES, observation(0)), stamp(0))
    with pytest.raises(
        RecordingError, match=r"lacks the topic\(s\) \['/robotrl/command', '/robotrl/intervention'\]"
    ):
        read_transitions(path)


def test_messages_follow_the_contract() -> None:
    state = odometry(stamp(1), [1.0, 2.0, 3.0], [0.5, 0.5, -0.5, 0.5], [0.1, 0.0, 0.0], [0.0, 0.0, 0.2])
    state = TYPESTORE.deserialize_cdr(
        TYPESTORE.serialize_cdr(state, MSGTYPES[STATE_TOPIC]), MSGTYPES[STATE_TOPIC]
    )
    assert (state.header.frame_id, state.child_frame_id) == ("world", "base_link")
    orientation = state.pose.pose.orientation
    assert (orientation.w, orientation.x, orientation.y, orientation.z) == (0.5, 0.5, -0.5, 0.5)
    assert (state.twist.twist.linear.x, state.twist.twist.angular.z) == (0.1, 0.2)

    flag = intervention(stamp(1), human=True)
    (status,) = flag.status
    assert (status.name, status.message) == ("intervention", "human")
    assert [(kv.key, kv.value) for kv in status.values] == [("source", "human")]
    assert flag.header.stamp.sec * 1_000_000_000 + flag.header.stamp.nanosec == stamp(1)

    with pytest.raises(ValueError, match=r"effort \(one value a name\) has shape \(3,\), expected \(4,\)"):
        joint_state(stamp(1), ACTION_NAMES, effort=[0.0, 0.0, 0.0])


def test_topic_types_agree_with_the_deployment_graph() -> None:
    deployment = pytest.importorskip("robotrl.deployment")
    assert {topic: deployment.TOPICS[topic][0] for topic in MSGTYPES} == MSGTYPES
