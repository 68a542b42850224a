"""The robot bridge: drives a robot backend at the control rate, publishes its state, applies motor commands.

It also keeps the loop's books, because it is where a control period starts and ends: a deadline is
missed when the motor command answering one state has not arrived by the next tick, and the
round-trip latency is from publishing a state to receiving the command stamped with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import JointState

from robotrl.deployment import BridgeConfig
from robotrl.envs.quadrotor.sim_backend import SimulatedQuadrotor
from robotrl_ros.messages import (
    COMMAND_QOS,
    STATE_QOS,
    declare_section,
    from_time,
    now_s,
    odometry,
    stamp_ns,
    to_time,
)
from robotrl_ros.runner import run_single


@dataclass
class LoopStats:
    """Per control period: what was published, what came back, and when."""

    ticks: int = 0
    dropped_states: int = 0
    missed_deadlines: int = 0
    round_trip_s: list[float] = field(default_factory=list)
    trajectory: list[tuple[float, float, float, float]] = field(default_factory=list)
    """(t, x, y, z) of every tick."""

    def summary(self) -> dict[str, float]:
        rt = np.asarray(self.round_trip_s) * 1e3
        answered = max(self.ticks - self.dropped_states, 1)
        return {
            "ticks": self.ticks,
            "dropped_states": self.dropped_states,
            "missed_deadlines": self.missed_deadlines,
            "missed_fraction": self.missed_deadlines / answered,
            "round_trip_ms_p50": float(np.percentile(rt, 50)) if rt.size else float("nan"),
            "round_trip_ms_p99": float(np.percentile(rt, 99)) if rt.size else float("nan"),
        }


class BridgeNode(Node):
    def __init__(self, node_name: str = "bridge", **kwargs):
        super().__init__(node_name, **kwargs)
        self.config = declare_section(self, BridgeConfig)
        rate = self.declare_parameter("control_rate_hz", 100.0).value
        self.stats_out = self.declare_parameter("stats_out", "").value
        self.period_s = 1.0 / rate
        cfg = self.config
        self.backend = SimulatedQuadrotor(cfg.platform, self.period_s, cfg.initial_position_m, cfg.ground_z_m)
        self.rng = np.random.default_rng(cfg.seed)
        self.stats = LoopStats()
        self._pending_ns: int | None = None
        self.state_pub = self.create_publisher(Odometry, "/robotrl/state", STATE_QOS)
        self.create_subscription(JointState, "/robotrl/motor_cmd", self.on_motor_cmd, COMMAND_QOS)
        self.timer = self.create_timer(self.period_s, self.tick)

    def tick(self) -> None:
        now = now_s(self)
        if self._pending_ns is not None:
            self.stats.missed_deadlines += 1
            self._pending_ns = None
        state = self.backend.advance(now)
        self.stats.ticks += 1
        self.stats.trajectory.append((now, *map(float, state.position_w)))
        if self.config.drop_state_fraction > 0 and self.rng.random() < self.config.drop_state_fraction:
            self.stats.dropped_states += 1
            return
        msg = odometry(state)
        # Stamped as it leaves, as a driver stamps a measurement: the simulator's own compute time is
        # not the deployment stack's latency (its state is that of the tick's start time all the same).
        msg.header.stamp = to_time(now_s(self))
        self._pending_ns = stamp_ns(msg.header.stamp)
        self.state_pub.publish(msg)

    def on_motor_cmd(self, msg: JointState) -> None:
        try:
            self.backend.command(np.asarray(msg.effort, np.float32))
        except ValueError as err:
            self.get_logger().error(f"motor command refused: {err}")
            return
        key = stamp_ns(msg.header.stamp)
        if key == self._pending_ns:
            self.stats.round_trip_s.append(now_s(self) - from_time(msg.header.stamp))
            self._pending_ns = None

    def destroy_node(self) -> None:
        if self.stats_out:
            Path(self.stats_out).write_text(json.dumps(self.stats.summary(), indent=2))
        super().destroy_node()


def main() -> None:
    run_single(BridgeNode)


if __name__ == "__main__":
    main()
