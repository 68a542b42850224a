"""Who commands the robot: the policy, or an operator holding the deadman; and how the operator flies.

The operator flies a quadrotor the way a pilot flies in position mode: the sticks move a setpoint
(starting where the robot is when the deadman goes down, so a takeover never jumps), and the
geometric controller turns that setpoint into motor commands. Those commands are recorded as the
human's actions, in the policy's own action space, which is what learning from interventions needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robotrl.control.geometric import GeometricController
from robotrl.control.state import RobotState, quadrotor_observation

STICK_DEADBAND = 0.05


@dataclass
class OperatorInput:
    axes: np.ndarray
    buttons: np.ndarray
    stamp_s: float


class OperatorPilot:
    """Deadman-gated operator commands from a stick-driven setpoint; counts takeovers for the record."""

    def __init__(
        self,
        controller: GeometricController,
        deadman_button: int,
        axes: tuple[int, int, int],
        max_speed_mps: float,
        joy_timeout_s: float,
    ):
        if deadman_button < 0 or min(axes) < 0:
            raise ValueError(f"button and axis indices must be >= 0, got {deadman_button}, {axes}")
        self.controller = controller
        self.deadman_button = deadman_button
        self.axes = axes
        self.max_speed_mps = max_speed_mps
        self.joy_timeout_s = joy_timeout_s
        self.operator: OperatorInput | None = None
        self.setpoint_w: np.ndarray | None = None
        self._last_s: float | None = None
        self.takeovers = 0

    def on_joy(self, axes: np.ndarray, buttons: np.ndarray, stamp_s: float) -> None:
        self.operator = OperatorInput(np.asarray(axes, np.float64), np.asarray(buttons), stamp_s)

    def human_active(self, now_s: float) -> bool:
        """Deadman held on a joystick heard from within the timeout; otherwise the policy commands."""
        op = self.operator
        held = (
            op is not None
            and now_s - op.stamp_s <= self.joy_timeout_s
            and self.deadman_button < op.buttons.size
            and bool(op.buttons[self.deadman_button])
        )
        if not held:
            self.setpoint_w = None
        return held

    def human_action(self, state: RobotState, previous_action: np.ndarray, now_s: float) -> np.ndarray:
        """The operator's motor commands this step (call only while human_active)."""
        assert self.operator is not None
        if self.setpoint_w is None:
            self.takeovers += 1
            self.setpoint_w = np.array(state.position_w, np.float64)
            self.controller.reset(1)
            self._last_s = now_s
        sticks = np.array([self.operator.axes[i] if i < self.operator.axes.size else 0.0 for i in self.axes])
        sticks = np.where(np.abs(sticks) < STICK_DEADBAND, 0.0, np.clip(sticks, -1.0, 1.0))
        velocity = self.max_speed_mps * sticks
        assert self._last_s is not None
        self.setpoint_w = self.setpoint_w + velocity * max(now_s - self._last_s, 0.0)
        self._last_s = now_s
        obs = quadrotor_observation(state, self.setpoint_w, velocity, previous_action)
        return self.controller.act(obs[None])[0]


class CommandArbiter:
    """Operator commands override the policy's for as long as they keep coming.

    It sits where the motors are commanded (the safety node), so a takeover costs the policy's
    commands no extra hop: the intervention node publishes only while the deadman is held.
    """

    def __init__(self, human_timeout_s: float):
        if not human_timeout_s > 0:
            raise ValueError(f"human_timeout_s must be > 0, got {human_timeout_s}")
        self.human_timeout_s = human_timeout_s
        self._last_human_s = -np.inf

    def note_human(self, now_s: float) -> None:
        self._last_human_s = now_s

    def human_active(self, now_s: float) -> bool:
        return now_s - self._last_human_s <= self.human_timeout_s
