"""The robot-side view of a quadrotor's state, and the 22-value observation built from it, numpy only.

The simulator builds the same observation in torch for a whole batch (`robotrl.envs.quadrotor.observations`);
on the robot one state arrives at a time from a message, so this is the per-state twin that the policy
node, the geometric fallback and the safety chain share. A test checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RobotState:
    """One measured state. World frame z-up, body frame FLU, times in seconds on one clock."""

    stamp_s: float
    """When the state was measured."""
    position_w: np.ndarray = field(default_factory=lambda: np.zeros(3))
    velocity_w: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rotation_wb: np.ndarray = field(default_factory=lambda: np.eye(3))
    """Body-to-world rotation matrix."""
    angular_velocity_b: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def is_finite(self) -> bool:
        return bool(
            np.isfinite(self.stamp_s)
            and np.isfinite(self.position_w).all()
            and np.isfinite(self.velocity_w).all()
            and np.isfinite(self.rotation_wb).all()
            and np.isfinite(self.angular_velocity_b).all()
        )

    def tilt_rad(self) -> float:
        """Angle between the body z axis and world up."""
        return float(np.arccos(np.clip(self.rotation_wb[2, 2], -1.0, 1.0)))


def quadrotor_observation(
    state: RobotState,
    target_position_w: np.ndarray,
    target_velocity_w: np.ndarray,
    previous_action: np.ndarray,
) -> np.ndarray:
    """RAPTOR's 22 values: position error, rotation row-major, velocity error, body rates, last action."""
    return np.concatenate(
        [
            np.asarray(state.position_w, np.float64) - target_position_w,
            np.asarray(state.rotation_wb, np.float64).reshape(9),
            np.asarray(state.velocity_w, np.float64) - target_velocity_w,
            np.asarray(state.angular_velocity_b, np.float64),
            np.asarray(previous_action, np.float64),
        ]
    ).astype(np.float32)


def quaternion_wxyz_to_rotation(q: np.ndarray) -> np.ndarray:
    """Body-to-world rotation matrix of a quaternion (w, x, y, z); normalises it first."""
    q = np.asarray(q, np.float64)
    w, x, y, z = (q / np.sqrt(q @ q)).tolist()
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_to_quaternion_wxyz(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a rotation matrix (Shepperd's method: any angle)."""
    m = np.asarray(rot, np.float64)
    trace = np.trace(m)
    k = int(np.argmax((trace, m[0, 0], m[1, 1], m[2, 2])))
    if k == 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = np.array([0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s])
    else:
        i, j, m_ = k - 1, k % 3, (k + 1) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[m_, m_])
        q = np.empty(4)
        q[0] = (m[m_, j] - m[j, m_]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + m_] = (m[m_, i] + m[i, m_]) / s
    return q if q[0] >= 0 else -q
