"""Keyboard as a joystick: publishes sensor_msgs/Joy for the intervention node from a terminal.

On a robot use the standard `joy` package's joy_node with a gamepad instead; this is for desks
without one. Terminals report key repeats, not key releases, so the deadman is a toggle (space),
and a stick falls back to zero when its key has not repeated for `release_s`.

  space: deadman on/off   w/s: +x/-x   a/d: +y/-y   r/f: up/down   q: quit
"""

from __future__ import annotations

import select
import sys
import termios
import time
import tty

from rclpy.node import Node
from sensor_msgs.msg import Joy

from robotrl.deployment import InterventionConfig
from robotrl_ros.messages import STATE_QOS, declare_section, to_time
from robotrl_ros.runner import run_single

KEYS = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0)}


class KeyboardTeleop(Node):
    def __init__(self, node_name: str = "keyboard_teleop", **kwargs):
        super().__init__(node_name, **kwargs)
        self.config = declare_section(self, InterventionConfig)
        self.release_s = self.declare_parameter("release_s", 0.3).value
        self.publisher = self.create_publisher(Joy, "/robotrl/teleop/joy", STATE_QOS)
        self.deadman = False
        self.sticks = [0.0, 0.0, 0.0]
        self.pressed_at = [0.0, 0.0, 0.0]
        self.settings = termios.tcgetattr(sys.stdin) if sys.stdin.isatty() else None
        if self.settings is not None:
            tty.setcbreak(sys.stdin.fileno())
        self.create_timer(0.02, self.tick)
        print(__doc__.split("\n\n")[-1].strip())

    def tick(self) -> None:
        now = time.monotonic()
        while select.select([sys.stdin], [], [], 0)[0]:
            key = sys.stdin.read(1)
            if key == "q":
                raise KeyboardInterrupt
            if key == " ":
                self.deadman = not self.deadman
                print(f"deadman {'HELD: operator flies' if self.deadman else 'released: policy flies'}")
            elif key in KEYS:
                axis, value = KEYS[key]
                self.sticks[axis], self.pressed_at[axis] = value, now
        for i in range(3):
            if now - self.pressed_at[i] > self.release_s:
                self.sticks[i] = 0.0
        cfg = self.config
        msg = Joy()
        msg.header.stamp = to_time(self.get_clock().now().nanoseconds * 1e-9)
        msg.axes = [0.0] * (max(cfg.axes) + 1)
        for axis_index, value in zip(cfg.axes, self.sticks, strict=True):
            msg.axes[axis_index] = value
        msg.buttons = [0] * (cfg.deadman_button + 1)
        msg.buttons[cfg.deadman_button] = int(self.deadman)
        self.publisher.publish(msg)

    def destroy_node(self) -> None:
        if self.settings is not None:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, self.settings)
        super().destroy_node()


def main() -> None:
    run_single(KeyboardTeleop)


if __name__ == "__main__":
    main()
