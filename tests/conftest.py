"""Shared fixtures: a private ROS 2 domain on loopback, and one small trained hover bundle per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Set before anything initialises rclpy: a private domain, discovery on this machine only, logs in tmp.
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_HOME", tempfile.mkdtemp(prefix="robotrl-ros-home-"))

HOVER_ITERATIONS = 160
"""Enough PPO for a policy that hovers and follows a slow figure-8 (about 75 s on 2 cores). Measured: 120
iterations left a 0.16 m hover offset on one run, over the graph test's 0.15 m bound; 160 left 0.08 m."""


@pytest.fixture(scope="session")
def hover_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained here unless ROBOTRL_TEST_BUNDLE names one (to iterate on the graph tests quickly)."""
    from robotrl.recipes.quadrotor import export_run, load_config, train

    if os.environ.get("ROBOTRL_TEST_BUNDLE"):
        return Path(os.environ["ROBOTRL_TEST_BUNDLE"])
    root = tmp_path_factory.mktemp("hover")
    config = load_config(None, [f"runner.max_iterations={HOVER_ITERATIONS}", "runner.eval_every=0"])
    train(config, root / "run", progress=False)
    return export_run(root / "run", root / "bundle")
