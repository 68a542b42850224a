"""Starting nodes: one per process (`ros2 run`, `robotrl deploy --processes`), or a whole graph composed
in one process from the node list of `robotrl.deployment` (`robotrl deploy`, `robotrl demo`, tests)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.experimental import EventsExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from robotrl.deployment import NodeSpec


def node_kwargs(spec: NodeSpec) -> dict:
    """The spec's parameters and remappings in the form rclpy's Node() takes them."""
    remaps = [arg for src, dst in spec.remappings for arg in ("-r", f"{src}:={dst}")]
    return {
        "parameter_overrides": [Parameter(k, value=v) for k, v in spec.parameters.items()],
        "cli_args": ["--ros-args", *remaps] if remaps else None,
    }


def make_executor() -> EventsExecutor:
    # The events executor dispatches from C++ with far less per-callback overhead than the default
    # executors: it is what keeps a 100 Hz graph inside 1 ms from state to motor command here.
    return EventsExecutor()


def freeze_heap() -> None:
    """Put every object alive now out of the cyclic garbage collector's reach (`gc.freeze`).

    A full collection walks every live object: in a process that has loaded torch, MuJoCo and
    onnxruntime it took 160 ms here, five times the 30 ms stale-action watchdog at 100 Hz, and one
    such pause faulted a test flight. Nodes are built by now; what the loop allocates later is still
    collected, and `thaw_heap` hands the frozen objects back when the graph goes.
    """
    gc.collect()
    gc.freeze()


def thaw_heap() -> None:
    gc.unfreeze()


def run_single(node_class: Callable[..., Node], args: Sequence[str] | None = None) -> None:
    """Entry point of one node in its own process; parameters come from --ros-args."""
    rclpy.init(args=list(args) if args is not None else sys.argv)
    node = node_class()
    executor = make_executor()
    executor.add_node(node)
    freeze_heap()
    try:
        # Not executor.spin(): the events executor's spin() did not return after SIGTERM shut the
        # context down (it kept a core busy); spin_once notices within a tenth of a second.
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
