"""Robot backends: the one interface a ROS 2 bridge drives, whether the robot is simulated or real."""

from robotrl.hardware.backend import RobotBackend

__all__ = ["RobotBackend"]
