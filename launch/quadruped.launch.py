"""`ros2 launch launch/quadruped.launch.py [config:=configs/deploy/quadruped_sim.yaml]` on a ROS 2 robot.

Jump with `ros2 service call /robotrl/jump std_srvs/srv/Trigger` once the safety node has armed.
"""

from robotrl_ros.launch_nodes import deployment_launch_description


def generate_launch_description():
    return deployment_launch_description("configs/deploy/quadruped_sim.yaml")
