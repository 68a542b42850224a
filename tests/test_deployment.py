"""The deployment YAML -> node list (what `robotrl deploy` and the launch file start), without ROS."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from robotrl.config import ConfigError
from robotrl.deployment import (
    REPO_ROOT,
    SERVICES,
    TOPICS,
    load_deployment,
    load_robot_profile,
    node_list,
    quadrotor_safety_chain,
)
from robotrl.recipes.closed_loop import fly_direct, tracking_rmse

DEPLOYMENT = REPO_ROOT / "configs/deploy/quadrotor_sim.yaml"


def test_the_simulator_deployment_starts_every_node_with_its_parameters() -> None:
    specs = {s.name: s for s in node_list(load_deployment(DEPLOYMENT))}
    assert list(specs) == ["reference", "policy", "intervention", "safety", "bridge"]  # bridge last
    assert {s.package for s in specs.values()} == {"robotrl_ros"}
    assert specs["policy"].executable == "policy_node"
    assert specs["policy"].parameters["bundle"] == str(REPO_ROOT / "runs/demo/bundle")
    assert specs["safety"].parameters["robot"] == str(REPO_ROOT / "hardware/crazyflie_sim.yaml")
    assert specs["bridge"].parameters["initial_position_m"] == [0.0, 0.0, 1.0]  # ROS arrays are lists
    assert all(s.parameters["control_rate_hz"] == 100.0 for s in specs.values())


def test_overrides_recorder_and_remappings_reach_the_node_list() -> None:
    cfg = load_deployment(
        DEPLOYMENT, "/some/bundle", ["nodes.recorder.enabled=true", "remappings={policy: {/a: /b}}"]
    )
    specs = {s.name: s for s in node_list(cfg)}
    assert specs["policy"].parameters["bundle"] == "/some/bundle"
    assert specs["recorder"].parameters["out"] == str(REPO_ROOT / "runs/deploy/recording")
    assert specs["policy"].remappings == (("/a", "/b"),)


def test_bad_deployments_say_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="unknown node"):
        node_list(load_deployment(DEPLOYMENT, overrides=["remappings={nobody: {/a: /b}}"]))
    with pytest.raises(ConfigError, match="only 'sim'"):
        node_list(load_deployment(DEPLOYMENT, overrides=["nodes.bridge.backend=serial"]))
    with pytest.raises(ConfigError, match="allowed"):
        load_deployment(DEPLOYMENT, overrides=["nodes.policy.rate=5"])


def test_robot_profiles_need_a_platform_and_limits(tmp_path: Path) -> None:
    robot = load_robot_profile(str(REPO_ROOT / "hardware/crazyflie_sim.yaml"))
    assert robot.platform == "crazyflie" and robot.safety["max_tilt_deg"] == 60.0
    bad = tmp_path / "robot.yaml"
    bad.write_text("safety: {}\n")
    with pytest.raises(ConfigError, match="platform"):
        load_robot_profile(str(bad))


def test_the_readme_lists_every_topic_and_service_as_the_code_has_them() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for name, (msgtype, qos, _) in {**TOPICS}.items():
        assert re.search(
            rf"\| `{re.escape(name)}` \| `{re.escape(msgtype)}` \| {re.escape(qos)} \|", readme
        ), name
    for name, (srvtype, _) in SERVICES.items():
        assert f"| `{name}` | `{srvtype}` |" in readme, name


def test_the_loop_without_ros_arms_after_the_proof_of_life_and_holds_hover(hover_bundle: Path) -> None:
    cfg = load_deployment(DEPLOYMENT, str(hover_bundle), ["nodes.reference.mode=hover"])
    chain = quadrotor_safety_chain(load_robot_profile(str(REPO_ROOT / cfg.robot)), cfg.control_rate_hz)
    flight = fly_direct(hover_bundle, chain, cfg.nodes.reference, 5.0, "crazyflie", (0.0, 0.0, 1.0))
    assert flight.shape == (500, 4) and flight[0, 0] == 0.0
    assert chain.mode.name == "POLICY", chain.first_fault
    assert tracking_rmse(flight, cfg.nodes.reference, 2.0) < 0.2  # the short test training leaves ~14 cm
    assert np.all(np.isfinite(flight))
