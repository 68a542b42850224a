"""Records the graph's topics to an MCAP bag as serialized bytes (nothing is deserialized on the robot).

`robotrl.hil.recording.read_transitions` turns the bag back into training data with the human flags.
"""

from __future__ import annotations

from collections.abc import Callable

from rclpy.node import Node

from robotrl.hil.recording import EPISODE_TOPIC, MSGTYPES, STATE_TOPIC, EpisodeRecorder
from robotrl_ros.messages import LATCHED_QOS, RECORD_QOS, STATE_QOS, message_class
from robotrl_ros.runner import run_single


class RecorderNode(Node):
    def __init__(self, node_name: str = "recorder", **kwargs):
        super().__init__(node_name, **kwargs)
        out = self.declare_parameter("out", "").value
        self.declare_parameter("control_rate_hz", 100.0)
        if not out:
            raise ValueError("recorder node: parameter 'out' (a new bag directory) is required")
        self.recorder = EpisodeRecorder(out)
        self.recorder.open()
        self.messages = 0
        for topic, msgtype in MSGTYPES.items():
            qos = {STATE_TOPIC: STATE_QOS, EPISODE_TOPIC: LATCHED_QOS}.get(topic, RECORD_QOS)
            self.create_subscription(
                message_class(msgtype), topic, self._writer(topic, msgtype), qos, raw=True
            )
        self.get_logger().info(f"recording {len(MSGTYPES)} topics to {out}")

    def _writer(self, topic: str, msgtype: str) -> Callable[[bytes], None]:
        def write(data: bytes) -> None:
            self.recorder.write(topic, msgtype, data, self.get_clock().now().nanoseconds)
            self.messages += 1

        return write

    def destroy_node(self) -> None:
        self.recorder.close()
        super().destroy_node()


def main() -> None:
    run_single(RecorderNode)


if __name__ == "__main__":
    main()
