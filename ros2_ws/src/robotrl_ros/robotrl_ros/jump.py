"""Run the quadruped graph composed in this process, trigger one jump, and report what happened: the
safety modes, the jump scored from the simulator's ground truth against its command, the loop's books."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import rclpy
from std_srvs.srv import Trigger

from robotrl.control.legged import jump_command, jump_outcome
from robotrl.deployment import JumpConfig, NodeSpec
from robotrl.safety import Mode
from robotrl_ros.graph import ComposedGraph
from robotrl_ros.messages import now_s, read_section


def _plain(value: float) -> float | None:
    """JSON has no NaN: an undefined number (no landing) is null."""
    return None if math.isnan(value) else value


def run_jump(
    specs: list[NodeSpec], duration_s: float, jump_after_s: float, arm_timeout_s: float = 15.0
) -> dict[str, Any]:
    """Start the graph, wait for it to arm, jump jump_after_s later, run until duration_s after arming
    (Ctrl-C ends it early, still with a report)."""
    with ComposedGraph(specs) as graph:
        bridge, policy, safety = (graph.nodes[name] for name in ("bridge", "policy", "safety"))
        report: dict[str, Any] = {"armed": False, "jump_triggered": False, "interrupted": False}
        jump: JumpConfig | None = None
        trigger_s = math.nan
        try:
            report["armed"] = graph.spin_until(lambda: safety.chain.mode is Mode.POLICY, arm_timeout_s)
            if not report["armed"]:
                report["arm_refusal"] = safety.arm_refusal or "no state or no actions arrived"
            else:
                armed_s = now_s(safety)
                node = graph.add(rclpy.create_node("robotrl_deploy_jump"))
                client = node.create_client(Trigger, "/robotrl/jump")
                graph.spin_until(client.service_is_ready, 5.0)
                graph.spin_for(jump_after_s)
                jump, trigger_s = read_section(policy, JumpConfig), now_s(safety)
                future = client.call_async(Trigger.Request())
                graph.spin_until(future.done, 2.0)
                answer = future.result()
                report["jump_triggered"] = bool(answer is not None and answer.success)
                report["jump_answer"] = (
                    answer.message if answer is not None else "no answer from /robotrl/jump"
                )
                graph.spin_for(max(armed_s + duration_s - now_s(safety), 0.0))
        except KeyboardInterrupt:
            report["interrupted"] = True
        rows = np.asarray(bridge.stats.trajectory, np.float64)
        start_s = float(rows[0, 0]) if len(rows) else now_s(safety)
        if report["jump_triggered"] and jump is not None:
            report.update(_jump_fields(rows, trigger_s, jump, start_s))
        report.update(_safety_fields(safety, start_s))
        report["loop"] = bridge.stats.summary()
        return report


def _jump_fields(rows: np.ndarray, trigger_s: float, jump: JumpConfig, start_s: float) -> dict[str, Any]:
    """Rows are the quadruped bridge's (t, x, y, z, yaw, four foot contacts)."""
    command = jump_command(jump.landing_x_m, jump.landing_y_m, jump.landing_yaw_rad)
    outcome = jump_outcome(rows[:, 0], rows[:, 1:4], rows[:, 4], rows[:, 5:9] > 0.5, trigger_s, command)
    return {
        "jump_command": {
            "landing_x_m": jump.landing_x_m,
            "landing_y_m": jump.landing_y_m,
            "landing_yaw_rad": jump.landing_yaw_rad,
        },
        "jump_triggered_at_s": trigger_s - start_s,
        "jumped": outcome.jumped,
        "landed": outcome.landed,
        "apex_height_gain_m": outcome.apex_gain_m,
        "landing_position_rel_m": [_plain(v) for v in outcome.landing_position_rel_m],
        "landing_error_m": _plain(outcome.landing_error_m),
        "landing_yaw_error_rad": _plain(outcome.landing_yaw_error_rad),
    }


def _safety_fields(safety: Any, start_s: float) -> dict[str, Any]:
    first = safety.chain.first_fault
    history = safety.mode_history
    return {
        "safety_mode": str(safety.chain.mode),
        "first_fault": f"{first.filter}: {first.reason}" if first else None,
        "fallbacks": sum(change.after is Mode.FALLBACK for change in history),
        "mode_history": [
            {
                "t_s": change.time_s - start_s,
                "from": str(change.before),
                "to": str(change.after),
                "reason": change.reason,
            }
            for change in history
        ],
    }
