"""`ros2 launch launch/quadrotor.launch.py [config:=configs/deploy/quadrotor_sim.yaml]` on a ROS 2 robot."""

from robotrl_ros.launch_nodes import deployment_launch_description


def generate_launch_description():
    return deployment_launch_description("configs/deploy/quadrotor_sim.yaml")
