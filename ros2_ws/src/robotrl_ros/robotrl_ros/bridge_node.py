"""The robot bridge: drives a robot backend at the control rate, publishes its state, applies motor commands.

It also keeps the loop's books, because it is where a control period starts and ends: a deadline is
missed when the motor command answering one state has not arrived by the next tick, and the
round-trip latency is from publishing a state to receiving the command stamped with it. `LoopBridge`
is that loop for any robot; `BridgeNode` is the quadrotor's (quadruped_bridge_node the quadruped's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from builtin_interfaces.msg import Time
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import JointState

from robotrl.control.state import RobotState
from robotrl.deployment import BridgeConfig
from robotrl.envs.quadrotor.sim_backend import SimulatedQuadrotor
from robotrl.hardware import RobotBackend
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
    trajectory: list[tuple[float, ...]] = field(default_factory=list)
    """One row a tick, starting (t, x, y, z) [s, m]; a bridge may append more columns (the quadruped's
    yaw and foot contacts)."""

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


class FaultInjection(Protocol):
    drop_state_fraction: float
    seed: int


class LoopBridge(Node):
    """The control loop's timer and books over a backend; a subclass declares its config, builds its
    backend and messages, then calls start().

    Each tick advances the backend to now, records the row `record` gives, and publishes the state
    stamped as it leaves, as a driver stamps a measurement: the simulator's own compute time is not the
    deployment stack's latency (its state is that of the tick's start time all the same).
    """

    def __init__(self, node_name: str, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.period_s = 1.0 / self.declare_parameter("control_rate_hz", 100.0).value
        self.stats_out = self.declare_parameter("stats_out", "").value
        self.stats = LoopStats()
        self._pending_ns: int | None = None

    def start(self, config: FaultInjection, backend: RobotBackend[Any]) -> None:
        self.config = config
        self.backend = backend
        self.rng = np.random.default_rng(config.seed)
        self.timer = self.create_timer(self.period_s, self.tick)

    def tick(self) -> None:
        now = now_s(self)
        if self._pending_ns is not None:
            self.stats.missed_deadlines += 1
            self._pending_ns = None
        state = self.backend.advance(now)
        self.stats.ticks += 1
        self.stats.trajectory.append(self.record(now, state))
        if self.config.drop_state_fraction > 0 and self.rng.random() < self.config.drop_state_fraction:
            self.stats.dropped_states += 1
            return
        stamp = to_time(now_s(self))
        self._pending_ns = stamp_ns(stamp)
        self.publish_state(state, stamp)

    def answered(self, stamp: Time) -> None:
        """A motor command stamped `stamp` arrived: it closes the round trip of that state."""
        if stamp_ns(stamp) == self._pending_ns:
            self.stats.round_trip_s.append(now_s(self) - from_time(stamp))
            self._pending_ns = None

    def record(self, now: float, state: Any) -> tuple[float, ...]:
        """The trajectory row of this tick, (t, x, y, z, ...)."""
        raise NotImplementedError

    def publish_state(self, state: Any, stamp: Time) -> None:
        raise NotImplementedError

    def destroy_node(self) -> None:
        if self.stats_out:
            Path(self.stats_out).write_text(json.dumps(self.stats.summary(), indent=2))
        self.backend.close()
        super().destroy_node()


class BridgeNode(LoopBridge):
    """The quadrotor: its state as Odometry, motor commands from the effort of /robotrl/motor_cmd."""

    def __init__(self, node_name: str = "bridge", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        cfg = declare_section(self, BridgeConfig)
        self.state_pub = self.create_publisher(Odometry, "/robotrl/state", STATE_QOS)
        self.create_subscription(JointState, "/robotrl/motor_cmd", self.on_motor_cmd, COMMAND_QOS)
        backend = SimulatedQuadrotor(cfg.platform, self.period_s, cfg.initial_position_m, cfg.ground_z_m)
        self.start(cfg, backend)

    def record(self, now: float, state: RobotState) -> tuple[float, ...]:
        return (now, *map(float, state.position_w))

    def publish_state(self, state: RobotState, stamp: Time) -> None:
        msg = odometry(state)
        msg.header.stamp = stamp
        self.state_pub.publish(msg)

    def on_motor_cmd(self, msg: JointState) -> None:
        try:
            self.backend.command(np.asarray(msg.effort, np.float32))
        except ValueError as err:
            self.get_logger().error(f"motor command refused: {err}")
            return
        self.answered(msg.header.stamp)


def main() -> None:
    run_single(BridgeNode)


if __name__ == "__main__":
    main()
