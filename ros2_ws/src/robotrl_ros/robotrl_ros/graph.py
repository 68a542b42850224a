"""Start the node list of a deployment: composed in this process (default), or one process a node.

Both read the same `NodeSpec`s that `launch/*.launch.py` hand to `ros2 launch`.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import rclpy
import yaml
from rclpy.node import Node

from robotrl.deployment import NodeSpec
from robotrl_ros.runner import freeze_heap, make_executor, node_kwargs, thaw_heap

NODE_CLASSES = {
    "bridge_node": "BridgeNode",
    "reference_node": "ReferenceNode",
    "policy_node": "PolicyNode",
    "intervention_node": "InterventionNode",
    "safety_node": "SafetyNode",
    "recorder_node": "RecorderNode",
    "quadruped_bridge_node": "QuadrupedBridgeNode",
    "jump_policy_node": "JumpPolicyNode",
    "joint_safety_node": "JointSafetyNode",
}


def node_class(executable: str) -> type[Node]:
    if executable not in NODE_CLASSES:
        raise ValueError(f"unknown executable '{executable}'; known: {sorted(NODE_CLASSES)}")
    module = importlib.import_module(f"robotrl_ros.{executable}")
    return getattr(module, NODE_CLASSES[executable])


class ComposedGraph:
    """Every node of the list in this process, under one executor that the caller spins.

    The caller's thread spins it (`spin_for`, `spin_until`): the events executor does not run from a
    background thread here, and spinning in the foreground also lets a test change the graph between
    spins (kill a node, add a publisher) without locks.
    """

    def __init__(self, specs: list[NodeSpec]):
        if not rclpy.ok():
            rclpy.init()
        self.nodes: dict[str, Node] = {}
        self._removed: list[Node] = []
        try:
            for spec in specs:
                self.nodes[spec.name] = node_class(spec.executable)(node_name=spec.name, **node_kwargs(spec))
        except BaseException:
            self._destroy()
            raise
        self.executor = make_executor()
        for node in self.nodes.values():
            self.executor.add_node(node)
        freeze_heap()

    def add(self, node: Node) -> Node:
        """Join a node that is not in the node list (a test's publisher, a monitor)."""
        self.executor.add_node(node)
        self.nodes[node.get_name()] = node
        return node

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=min(left, 0.05))

    def spin_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Spin until condition() holds (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                return False
            self.executor.spin_once(timeout_sec=0.01)
        return True

    def remove(self, name: str) -> None:
        """Stop one node mid-flight (what a crashed process looks like to the others): it is no longer
        spun, so it neither receives nor publishes. It is destroyed with the graph, not now: destroying
        it here raced the executor's queued events for it (InvalidHandle)."""
        node = self.nodes.pop(name)
        self.executor.remove_node(node)
        self._removed.append(node)

    def _destroy(self) -> None:
        for node in [*self.nodes.values(), *self._removed]:
            node.destroy_node()
        self.nodes.clear()
        self._removed.clear()

    def shutdown(self) -> None:
        for node in list(self.nodes.values()):
            self.executor.remove_node(node)
        self._destroy()
        self.executor.shutdown()
        thaw_heap()

    def __enter__(self) -> ComposedGraph:
        return self

    def __exit__(self, kind: type | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.shutdown()


def spawn_processes(specs: list[NodeSpec], params_dir: Path | None = None) -> list[subprocess.Popen]:
    """One `python -m robotrl_ros.<executable>` per node, with a ROS parameters file each (as launch does)."""
    params_dir = params_dir or Path(tempfile.mkdtemp(prefix="robotrl-params-"))
    processes = []
    for spec in specs:
        params_file = params_dir / f"{spec.name}.yaml"
        params_file.write_text(yaml.safe_dump({spec.name: {"ros__parameters": spec.parameters}}))
        remaps = [arg for src, dst in spec.remappings for arg in ("-r", f"{src}:={dst}")]
        command = [sys.executable, "-m", f"robotrl_ros.{spec.executable}", "--ros-args",
                   "-r", f"__node:={spec.name}", "--params-file", str(params_file), *remaps]  # fmt: skip
        processes.append(subprocess.Popen(command))
    return processes
