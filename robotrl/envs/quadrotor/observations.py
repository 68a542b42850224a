"""The RAPTOR observation layout (22 values, ANCHORS §1) and its named fields.

Position and velocity are offsets from the target, so tracking a trajectory is hovering at a moving
target. The same layout is what a bundle's policy.yaml lists and what the robot-side code builds.
"""

from __future__ import annotations

import torch

from robotrl.envs.quadrotor.dynamics import ANGVEL_B, LINVEL_W, POS_W, QUAT_WXYZ, quat_to_rotmat

OBSERVATION_FIELDS: tuple[tuple[str, int, str, str], ...] = (
    ("position_error_w", 3, "m", "world z-up; position minus target"),
    ("rotation_matrix_wb", 9, "1", "body-to-world rotation, row-major; body FLU"),
    ("linear_velocity_error_w", 3, "m/s", "world z-up; velocity minus target velocity"),
    ("angular_velocity_b", 3, "rad/s", "body FLU"),
    ("previous_action", 4, "1", "last action in [-1, 1], motor order FR, BR, BL, FL"),
)
"""(name, size, unit, frame) of each observation field, in order."""

OBSERVATION_DIM = sum(size for _, size, _, _ in OBSERVATION_FIELDS)
ACTION_FIELDS: tuple[tuple[str, int, str, str], ...] = (
    ("motor_commands", 4, "1", "[-1, 1] mapped linearly onto the motor command range; FR, BR, BL, FL"),
)
ACTION_DIM = 4


def raptor_observation(
    state: torch.Tensor,
    target_position_w: torch.Tensor,
    target_velocity_w: torch.Tensor,
    previous_action: torch.Tensor,
) -> torch.Tensor:
    """[N, 22] observation from a dynamics state [N, 17] and the target (moving or not)."""
    rot = quat_to_rotmat(state[:, QUAT_WXYZ]).reshape(-1, 9)
    return torch.cat(
        (
            state[:, POS_W] - target_position_w,
            rot,
            state[:, LINVEL_W] - target_velocity_w,
            state[:, ANGVEL_B],
            previous_action,
        ),
        dim=-1,
    )
