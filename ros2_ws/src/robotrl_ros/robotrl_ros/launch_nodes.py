"""The launch description of a deployment YAML, for `launch/*.launch.py` on a robot with ROS 2 installed.

A thin shell: the node list comes from `robotrl.deployment.node_list`, the function `robotrl deploy`
starts and the tests check, so the launched graph is the tested graph. `launch` and `launch_ros` are
not on PyPI, so this module imports them only when a launch file calls it.
"""

from __future__ import annotations

from typing import Any

from robotrl.deployment import load_deployment, node_list


def _nodes(context: Any) -> list[Any]:
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    config = load_deployment(LaunchConfiguration("config").perform(context))
    return [
        Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            parameters=[spec.parameters],
            remappings=list(spec.remappings),
            output="screen",
        )
        for spec in node_list(config)
    ]


def deployment_launch_description(default_config: str) -> Any:
    """A LaunchDescription with a `config` argument (default_config unless given) and its nodes."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    return LaunchDescription(
        [DeclareLaunchArgument("config", default_value=default_config), OpaqueFunction(function=_nodes)]
    )
