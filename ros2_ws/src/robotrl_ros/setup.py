"""ament_python package: `colcon build` on a robot, `pip install -e ros2_ws/src/robotrl_ros` here."""

from setuptools import setup

PACKAGE = "robotrl_ros"
NODES = ("bridge_node", "reference_node", "policy_node", "intervention_node", "safety_node", "recorder_node",
         "keyboard_teleop", "quadruped_bridge_node", "jump_policy_node", "joint_safety_node")  # fmt: skip

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    description="Thin ROS 2 nodes over robotrl",
    license="MIT",
    entry_points={"console_scripts": [f"{node} = {PACKAGE}.{node}:main" for node in NODES]},
)
