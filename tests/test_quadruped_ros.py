"""The quadruped graph composed in this process, the A1 in MuJoCo as the robot: it stands through a jump
of an untrained policy, and a dead policy, a fall, NaN actions and a dead safety node each leave every
joint damped; bundles for another task or layout are refused.

rclpy is imported at the top on purpose: without ROS 2 this module fails to import and the suite
fails, it does not skip. conftest.py puts the graph on a private ROS_DOMAIN_ID, on loopback only.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from ros_nodes import MotorLog
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from robotrl.control.legged import JUMP_OBSERVATION_LAYOUT
from robotrl.deployment import REPO_ROOT, QuadrupedDeploymentConfig, QuadrupedNodesConfig, node_list
from robotrl.export.bundle import ActionField, Normalization, ObservationField, PolicySpec
from robotrl.export.export import export_bundle
from robotrl.safety import Mode, SafetyConfigError
from robotrl_ros.graph import ComposedGraph
from robotrl_ros.messages import COMMAND_QOS, now_s, to_time

PERIOD_S = 0.02
ACTION_TIMEOUT_S = 0.06
"""hardware/a1_sim.yaml's action_timeout_s."""


@pytest.fixture(scope="session")
def jump_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two PPO iterations on 64 robots: the actor's last layer starts near 0, so its actions are ~0."""
    from robotrl.recipes.quadruped_jump import export_run, load_config, train

    root = tmp_path_factory.mktemp("jump")
    overrides = [
        "env.num_envs=64", "env.num_threads=1", "threads=1", "stages=[upward]", "upward.max_iterations=2",
        "eval.every=0", "eval.episodes=2", "checkpoint_every=2",
    ]  # fmt: skip
    train(load_config(None, overrides), root / "run", progress=False)
    return export_run(root / "run", root / "bundle", steps=20)


def config(bundle: Path, **bridge: object) -> QuadrupedDeploymentConfig:
    nodes = QuadrupedNodesConfig()
    nodes = dataclasses.replace(nodes, bridge=dataclasses.replace(nodes.bridge, **bridge))
    return QuadrupedDeploymentConfig(bundle=str(bundle), nodes=nodes)


@contextmanager
def standing(cfg: QuadrupedDeploymentConfig, settle_s: float = 0.5) -> Iterator[ComposedGraph]:
    """The graph, armed (after discovery and the proof of life) and standing for settle_s."""
    with ComposedGraph(node_list(cfg)) as graph:
        log = graph.add(MotorLog("position"))
        safety = graph.nodes["safety"]
        assert graph.spin_until(lambda: safety.chain.mode is Mode.POLICY, 15.0), safety.arm_refusal
        assert graph.spin_until(lambda: bool(log.commands), 5.0), "the motor log never matched"
        graph.spin_for(settle_s)
        assert safety.chain.mode is Mode.POLICY, safety.chain.first_fault
        yield graph


def base_height(graph: ComposedGraph) -> float:
    return float(graph.nodes["bridge"].backend.truth.base_pos_w[0, 2])


def assert_damped(graph: ComposedGraph, since_s: float, periods: int = 3, commanded: bool = True) -> None:
    """Within a few periods every joint runs damped at the bridge, every later motor command (when
    `commanded`: the safety node still runs) is all NaN, and the robot sits down."""
    bridge, log = graph.nodes["bridge"], graph.nodes["test_motor_log"]
    assert graph.spin_until(lambda: bridge.backend.damped.all(), periods * PERIOD_S + 0.05)
    assert now_s(bridge) - since_s <= periods * PERIOD_S + 0.05
    damped_s = now_s(bridge)
    graph.spin_for(1.5)
    later = [c for t, c in log.commands if t > damped_s + PERIOD_S]
    assert bool(later) == commanded and all(np.isnan(c).all() for c in later)
    assert base_height(graph) < 0.12, "damped joints let the robot sit down"


def test_the_standing_robot_stays_up_through_a_jump_of_an_untrained_policy(jump_bundle: Path) -> None:
    with standing(config(jump_bundle)) as graph:
        bridge, policy, safety = (graph.nodes[n] for n in ("bridge", "policy", "safety"))
        client = graph.add(rclpy.create_node("test_jump")).create_client(Trigger, "/robotrl/jump")
        assert graph.spin_until(client.service_is_ready, 5.0)
        future = client.call_async(Trigger.Request())
        assert graph.spin_until(future.done, 2.0) and future.result().success, future.result()
        start = len(bridge.stats.trajectory)
        assert graph.spin_until(lambda: policy.jump is None, 5.0), "the 3 s jump episode did not end"
        assert safety.chain.mode is Mode.POLICY and safety.chain.first_fault is None
        assert policy.non_finite == 0 and not bridge.backend.damped.any()
        rows = np.asarray(bridge.stats.trajectory[start:])
        assert len(rows) > 140  # 3 s at 50 Hz
        assert np.abs(rows[:, 3] - rows[0, 3]).max() < 0.03, "the base kept its height"
        assert rows[:, 5:].all(), "every foot stayed on the ground"
        targets = np.array([c for _, c in graph.nodes["test_motor_log"].commands[-140:]])
        assert np.isfinite(targets).all()
        np.testing.assert_allclose(targets, np.tile(policy.observation.default_joint_pos, (140, 1)), atol=0.1)
        stats = bridge.stats.summary()
        assert stats["missed_fraction"] < 0.05, stats


def test_a_dead_policy_node_damps_every_joint_within_a_few_periods(jump_bundle: Path) -> None:
    with standing(config(jump_bundle)) as graph:
        safety = graph.nodes["safety"]
        died_s = now_s(safety)
        graph.remove("policy")
        assert graph.spin_until(lambda: safety.chain.mode is Mode.FALLBACK, 1.0)
        fault = safety.chain.fault
        assert fault is not None and fault.filter == "stale_action", fault
        assert fault.time_s - died_s <= ACTION_TIMEOUT_S + 2 * PERIOD_S, fault.time_s - died_s
        assert_damped(graph, fault.time_s)


def test_a_push_over_trips_the_tilt_limit_and_damps_every_joint(jump_bundle: Path) -> None:
    with standing(config(jump_bundle)) as graph:
        safety = graph.nodes["safety"]
        graph.nodes["bridge"].backend.push(np.array((0.0, 2.0, 0.0)), np.array((8.0, 0.0, 0.0)))
        assert graph.spin_until(lambda: safety.chain.mode is Mode.FALLBACK, 2.0)
        fault = safety.chain.fault
        assert fault is not None and fault.filter == "tilt", fault
        assert_damped(graph, fault.time_s)


def test_nan_from_the_policy_damps_every_joint(jump_bundle: Path) -> None:
    with standing(config(jump_bundle)) as graph:
        policy, safety = graph.nodes["policy"], graph.nodes["safety"]
        # The policy node's own path: a non-finite observation gives NaN actions, never an exception.
        assert np.isnan(policy.act(np.full(57, np.nan, np.float32))).all() and policy.non_finite == 1
        impostor = graph.add(rclpy.create_node("test_nan_policy"))
        pub = impostor.create_publisher(JointState, "/robotrl/policy/action", COMMAND_QOS)
        assert graph.spin_until(lambda: pub.get_subscription_count() > 0, 5.0)
        # The action topic keeps one message, so the NaNs keep coming, as a broken net's would.
        impostor.create_timer(
            0.005,
            lambda: pub.publish(
                JointState(header=Header(stamp=to_time(safety.state.stamp_s)), effort=[math.nan] * 12)
            ),
        )
        assert graph.spin_until(lambda: safety.chain.mode is Mode.FALLBACK, 1.0)
        fault = safety.chain.fault
        assert fault is not None and fault.filter == "finite", fault
        assert_damped(graph, fault.time_s)


def test_a_dead_safety_node_leaves_the_bridge_damping_every_joint(jump_bundle: Path) -> None:
    with standing(config(jump_bundle)) as graph:
        removed_s = now_s(graph.nodes["bridge"])
        graph.remove("safety")
        # command_timeout_periods (5) without a command, then the next tick.
        assert_damped(graph, removed_s, periods=5 + 2, commanded=False)


def test_robotrl_deploy_arms_jumps_and_writes_the_report(jump_bundle: Path, tmp_path: Path) -> None:
    from robotrl.cli import main

    report_path = tmp_path / "report.json"
    args = ["deploy", str(REPO_ROOT / "configs/deploy/quadruped_sim.yaml"), "--bundle", str(jump_bundle),
            "--duration", "1.5", "--jump-after", "0.2", "--report", str(report_path)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    assert report["armed"] and report["jump_triggered"] and report["fallbacks"] == 0
    assert not report["jumped"] and abs(report["apex_height_gain_m"]) < 0.03  # ~0 actions: it stands
    assert report["landing_error_m"] is None and report["safety_mode"] == "policy"
    assert [(m["from"], m["to"]) for m in report["mode_history"]] == [("disarmed", "policy")]
    assert report["loop"]["ticks"] > 75


def _export(out: Path, task: str, robot: str, fields: tuple[tuple[str, int], ...], actions: int) -> Path:
    """A bundle of a random linear policy with the given interface, at the graph's 50 Hz."""
    obs_dim = sum(size for _, size in fields)
    torch.manual_seed(0)
    spec = PolicySpec(
        task=task,
        robot=robot,
        observation_fields=tuple(ObservationField(name, size, "1", "test") for name, size in fields),
        normalization=Normalization(in_graph=False, method="none"),
        action_fields=(ActionField("actions", actions, "1", "test", "test"),),
        control_rate_hz=50.0,
        safety_limits={},
    )
    recorded = torch.randn(8, obs_dim)
    return export_bundle(
        torch.nn.Linear(obs_dim, actions), out, spec, recorded, seed=0, config={}, metrics={}
    )


def test_a_bundle_of_another_task_or_layout_is_refused_saying_why(jump_bundle: Path, tmp_path: Path) -> None:
    def start(bundle: Path, name: str) -> None:
        with ComposedGraph([s for s in node_list(config(bundle)) if s.name == name]):
            pass

    hover = _export(tmp_path / "hover", "quadrotor_hover", "crazyflie", (("state", 22),), 4)
    with pytest.raises(ValueError, match=r"'quadrotor_hover' policy for 'crazyflie' taking 22 observations"):
        start(hover, "policy")
    with pytest.raises(
        SafetyConfigError, match=r"trained for robot 'crazyflie'.*\n.*4 actions, this robot 12"
    ):
        start(hover, "safety")
    short = _export(tmp_path / "short", "quadruped_jump", "unitree_a1", JUMP_OBSERVATION_LAYOUT[:-1], 12)
    with pytest.raises(ValueError, match=r"taking 56 observations .*has_jumped\[1\]\); this node runs"):
        start(short, "policy")
    # And the quadrotor's policy node refuses the jump bundle.
    from robotrl.deployment import DeploymentConfig

    with pytest.raises(ValueError, match="takes 57 observations; this node builds the 22-value"):
        specs = node_list(DeploymentConfig(bundle=str(jump_bundle), control_rate_hz=50.0))
        with ComposedGraph([s for s in specs if s.name == "policy"]):
            pass
