"""`ros2 launch launch/quadrotor.launch.py [config:=configs/deploy/quadrotor_sim.yaml]` on a robot with ROS 2.

A thin shell: the node list comes from `robotrl.deployment.node_list`, the function `robotrl deploy`
starts and the tests check, so the launched graph is the tested graph.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from robotrl.deployment import load_deployment, node_list


def _nodes(context):
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


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument("config", default_value="configs/deploy/quadrotor_sim.yaml"),
            OpaqueFunction(function=_nodes),
        ]
    )
