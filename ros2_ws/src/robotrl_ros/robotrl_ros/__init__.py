"""ROS 2 nodes over robotrl: thin shells, the logic lives in robotrl and is tested without ROS."""
