"""Fly a composed graph for a while and collect what it did: the path, the loop's books, the latency."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robotrl.control.reference import ReferenceConfig
from robotrl.deployment import (
    DeploymentConfig,
    NodeSpec,
    load_robot_profile,
    node_list,
    quadrotor_safety_chain,
    resolve_path,
)
from robotrl.recipes.closed_loop import fly_direct, plot_tracking, tracking_rmse
from robotrl_ros.graph import ComposedGraph


@dataclass
class GraphFlight:
    trajectory: np.ndarray
    """[T, 4] (t, x, y, z) per bridge tick, t from the reference node's start."""
    reference: ReferenceConfig
    loop: dict[str, float]
    """The bridge's books: ticks, dropped states, missed deadlines, round trip percentiles."""
    latency_ms: np.ndarray
    """State stamp -> filtered motor command published, per command, at the safety node [ms]."""
    safety_mode: str
    first_fault: str | None


def fly_graph(specs: list[NodeSpec], duration_s: float, arm_timeout_s: float = 15.0) -> GraphFlight:
    """Start the graph, wait for it to arm (discovery, then the proof of life), fly duration_s."""
    with ComposedGraph(specs) as graph:
        bridge, reference, safety = (graph.nodes[n] for n in ("bridge", "reference", "safety"))
        if not graph.spin_until(lambda: reference.start_s is not None, arm_timeout_s):
            raise RuntimeError(
                f"the graph did not arm within {arm_timeout_s} s: "
                f"{safety.arm_refusal or 'no state or no actions arrived'}"
            )
        graph.spin_for(duration_s)
        trajectory = np.asarray(bridge.stats.trajectory, np.float64).reshape(-1, 4)
        trajectory[:, 0] -= reference.start_s
        return GraphFlight(
            trajectory=trajectory,
            reference=reference.config,
            loop=bridge.stats.summary(),
            latency_ms=np.asarray(safety.latency_s) * 1e3,
            safety_mode=safety.chain.mode.name,
            first_fault=(f"{fault.filter}: {fault.reason}" if (fault := safety.chain.first_fault) else None),
        )


def fly_and_compare(config: DeploymentConfig, duration_s: float, out_dir: Path) -> dict[str, float]:
    """The deployment's graph for duration_s after arming, and the same bundle, chain and reference in
    a plain loop without ROS: tracking RMSE of both, deadline misses, latency; JSON and a PNG in out_dir."""
    reference = config.nodes.reference
    flight = fly_graph(node_list(config), duration_s)
    chain = quadrotor_safety_chain(load_robot_profile(resolve_path(config.robot)), config.control_rate_hz)
    bridge = config.nodes.bridge
    direct = fly_direct(
        resolve_path(config.bundle), chain, reference, duration_s, bridge.platform,
        bridge.initial_position_m, config.control_rate_hz,
    )  # fmt: skip
    flown = flight.trajectory[(flight.trajectory[:, 0] >= 0) & (flight.trajectory[:, 0] <= duration_s)]
    result = {
        "duration_s": duration_s,
        "ros_rmse_m": tracking_rmse(flown, reference, reference.start_after_s),
        "direct_rmse_m": tracking_rmse(direct, reference, reference.start_after_s),
        "ticks": flight.loop["ticks"],
        "missed_deadlines": flight.loop["missed_deadlines"],
        "missed_fraction": flight.loop["missed_fraction"],
        "latency_ms_p50": float(np.percentile(flight.latency_ms, 50)),
        "latency_ms_p99": float(np.percentile(flight.latency_ms, 99)),
        "round_trip_ms_p50": flight.loop["round_trip_ms_p50"],
        "round_trip_ms_p99": flight.loop["round_trip_ms_p99"],
        "safety_mode": flight.safety_mode,
        "first_fault": flight.first_fault or "",
    }
    result["rmse_ratio"] = result["ros_rmse_m"] / result["direct_rmse_m"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ros_flight.json").write_text(json.dumps(result, indent=2))
    plot_tracking({"ROS 2 graph": flown, "direct (no ROS)": direct}, reference, out_dir / "ros_flight.png")
    return result
