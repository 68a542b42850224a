"""The robot-side view of a legged robot: its measured state, its joints, jump phases and the jump policy's
observation, numpy only.

The jump env builds the observation in torch for a batch (`QuadrupedJumpEnv.observe`); on the robot one
state arrives at a time from the joint, IMU and foot-contact messages, so this is the per-state twin the
policy node uses and the safety chain shares the state of. A test checks the two agree on a rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

JUMP_TASK = "quadruped_jump"
"""The bundle task whose observation `JumpObservation` builds."""
JUMP_OBSERVATION_LAYOUT: tuple[tuple[str, int], ...] = (
    ("projected_gravity_b", 3),
    ("base_angvel_b", 3),
    ("joint_pos_rel", 12),
    ("joint_vel", 12),
    ("previous_action", 12),
    ("landing_position_rel", 3),
    ("landing_quat_wxyz", 4),
    ("obstacle_centre_rel", 3),
    ("obstacle_size", 3),
    ("has_jumped", 1),
    ("episode_time", 1),
)
"""(name, size) of each field `JumpObservation` fills, in order: the jump env's OBSERVATION_FIELDS."""
JUMP_COMMAND_DIM = 13


@dataclass(frozen=True, eq=False)
class LeggedState:
    """One measured state of a legged robot, as its sensors give it. There is no base position or linear
    velocity: a robot measures neither directly. Body frame FLU, world frame z-up, times on one clock [s]."""

    stamp_s: float
    joint_pos: np.ndarray
    """[J] joint positions [rad], in the order of the robot's joint names."""
    joint_vel: np.ndarray
    """[J] [rad/s]."""
    joint_torque: np.ndarray
    """[J] joint torques [N m], NaN where the robot does not measure them; neither the policy nor the safety
    chain reads them, so they are not part of is_finite()."""
    quat_wxyz: np.ndarray
    """[4] trunk orientation, body to world (the IMU's)."""
    angular_velocity_b: np.ndarray
    """[3] trunk angular velocity, body frame [rad/s]."""
    foot_force_n: np.ndarray
    """[F] normal force on each foot [N] (peak over the last control period)."""

    def is_finite(self) -> bool:
        return bool(
            math.isfinite(self.stamp_s)
            and np.isfinite(self.joint_pos).all()
            and np.isfinite(self.joint_vel).all()
            and np.isfinite(self.quat_wxyz).all()
            and np.isfinite(self.angular_velocity_b).all()
            and np.isfinite(self.foot_force_n).all()
        )

    def projected_gravity_b(self) -> np.ndarray:
        """The unit gravity direction in the body frame (0, 0, -1 when level); NaN for a zero quaternion."""
        norm2 = float(self.quat_wxyz @ self.quat_wxyz)
        if not 1e-12 < norm2 < math.inf:
            return np.full(3, np.nan)
        w, x, y, z = (np.asarray(self.quat_wxyz, np.float64) / math.sqrt(norm2)).tolist()
        # Minus the bottom row of the body-to-world rotation: R^T (0, 0, -1).
        return -np.array((2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y)))

    def tilt_rad(self) -> float:
        """Angle between the body z axis and world up (NaN when the orientation is unusable)."""
        up = -float(self.projected_gravity_b()[2])
        return math.acos(min(max(up, -1.0), 1.0)) if math.isfinite(up) else math.nan

    def yaw_rad(self) -> float:
        w, x, y, z = np.asarray(self.quat_wxyz, np.float64).tolist()
        return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))

    def foot_contact(self, threshold_n: float) -> np.ndarray:
        """[F] bool: the foot pushes on the ground with more than threshold_n."""
        return np.asarray(self.foot_force_n) > threshold_n

    def airborne(self, threshold_n: float) -> bool:
        """No foot touches the ground: a jump's flight (or a robot lying on its back)."""
        return not self.foot_contact(threshold_n).any()


def ema_alpha(cutoff_hz: float | None, rate_hz: float) -> float:
    """Smoothing factor of a first-order EMA, y += alpha (x - y), whose gain is -3 dB at cutoff_hz
    when run at rate_hz (1.0, no filtering, for None). ANCHORS section 3 filters actions at 5 Hz."""
    if cutoff_hz is None:
        return 1.0
    if not 0 < cutoff_hz < rate_hz / 2:
        raise ValueError(
            f"action filter cutoff must be in (0, {rate_hz / 2}) Hz at {rate_hz} Hz, got {cutoff_hz}"
        )
    c = math.cos(2.0 * math.pi * cutoff_hz / rate_hz)
    return c - 1.0 + math.sqrt(c * c - 4.0 * c + 3.0)


class ActionFilter:
    """One robot's policy actions through the EMA the training env ran them through (alpha 1: none).
    It starts at 0, the default pose, as each training episode did."""

    def __init__(self, alpha: float, size: int):
        if not 0 < alpha <= 1:
            raise ValueError(f"action filter alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.value = np.zeros(size)

    def reset(self) -> None:
        self.value[:] = 0.0

    def __call__(self, action: np.ndarray) -> np.ndarray:
        """The filtered action; a non-finite action passes through (the chain faults on it) and is not
        remembered."""
        action = np.asarray(action, np.float64)
        if not np.isfinite(action).all():
            return action
        self.value = action - (1.0 - self.alpha) * (action - self.value)  # exactly the action at alpha 1
        return self.value.copy()


@dataclass(frozen=True)
class JointProfile:
    """A legged robot's joints as its motor drivers and its policy see them: the `joints:` section of its
    hardware/<robot>.yaml. Every field is required, as for the safety limits."""

    names: tuple[str, ...]
    """Joint names in motor order: the order of every joint array, message and action."""
    foot_names: tuple[str, ...]
    """Feet in the order of the foot-contact message."""
    default_pos_rad: tuple[float, ...]
    """Joint targets at action 0 [rad] (the standing pose the policy was trained around)."""
    action_scale: float
    """Joint target = default + action_scale * action [rad] ..."""
    hip_action_scale: float
    """... times this for the hip joints (names ending in '_hip_joint')."""
    action_clip: float
    """Actions are clipped to +-action_clip before scaling, as the training env clipped them."""
    kp: float
    """PD stiffness the motor drivers run [N m/rad]."""
    kd: float
    """PD damping the motor drivers run [N m s/rad]."""
    damping_kd: float
    """Damping of a damped joint (a NaN target: kp 0, kd this) [N m s/rad]: what the fallback sends."""
    contact_threshold_n: float
    """A foot is on the ground when its normal force exceeds this [N]."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "foot_names", tuple(str(n) for n in self.foot_names))
        object.__setattr__(self, "default_pos_rad", tuple(float(v) for v in self.default_pos_rad))
        if not self.names or len(set(self.names)) != len(self.names) or not self.foot_names:
            raise ValueError(f"joints: names and foot_names must be unique and non-empty, got {self.names}")
        if len(self.default_pos_rad) != len(self.names):
            raise ValueError(
                f"joints: default_pos_rad needs {len(self.names)} values (one a joint), "
                f"got {len(self.default_pos_rad)}"
            )
        for name in ("action_scale", "hip_action_scale", "action_clip", "kp", "damping_kd"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"joints: {name} must be > 0, got {getattr(self, name)!r}")
        if not (float(self.kd) >= 0 and float(self.contact_threshold_n) >= 0):
            raise ValueError(
                "joints: kd and contact_threshold_n must be >= 0, got "
                f"{self.kd!r}, {self.contact_threshold_n!r}"
            )

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def action_gain_rad(self) -> np.ndarray:
        """[J] target change per unit of action [rad]."""
        hips = np.array([n.endswith("_hip_joint") for n in self.names])
        return self.action_scale * np.where(hips, self.hip_action_scale, 1.0)

    def targets(self, action: np.ndarray, action_filter: ActionFilter | None = None) -> np.ndarray:
        """Joint targets [J] for a policy action [J], as the training env mapped them: clipped, through
        the bundle's action filter if it has one, around the default pose (NaN stays NaN)."""
        clipped = np.clip(np.asarray(action, np.float64), -self.action_clip, self.action_clip)
        if action_filter is not None:
            clipped = action_filter(clipped)
        return np.asarray(self.default_pos_rad) + self.action_gain_rad * clipped


class JumpPhaseTracker:
    """One robot's jump phases from its foot contacts, as `robotrl.envs.quadruped.phases` defines them:
    flight is every foot off the ground, landing the first contact after a flight, has_jumped latches."""

    def __init__(self) -> None:
        self.in_flight = False
        self.has_jumped = False
        self.has_landed = False

    def update(self, foot_contact: np.ndarray) -> bool:
        """Take one period's foot contacts [F] (bool); True on the period the robot lands."""
        airborne = not bool(np.any(foot_contact))
        landed = self.in_flight and not airborne
        self.has_jumped |= airborne
        self.has_landed |= landed
        self.in_flight = airborne
        return landed


def jump_command(landing_x_m: float, landing_y_m: float, landing_yaw_rad: float) -> np.ndarray:
    """The 13 command values of a jump on flat ground: landing offset and yaw in the start heading frame,
    no obstacle (the curriculum's layout: position 3, quaternion 4, obstacle centre 3, obstacle size 3)."""
    command = np.zeros(JUMP_COMMAND_DIM)
    command[0:2] = (landing_x_m, landing_y_m)
    command[3:7] = (math.cos(0.5 * landing_yaw_rad), 0.0, 0.0, math.sin(0.5 * landing_yaw_rad))
    return command


class JumpObservation:
    """The jump policy's 57 values from one robot's states, with the episode's clock, has_jumped latch and
    last action. An episode starts with a command; its clock starts at the first state after that, as an
    episode's first observation in training reads 0."""

    def __init__(self, default_joint_pos: np.ndarray, contact_threshold_n: float, action_clip: float):
        self.default_joint_pos = np.asarray(default_joint_pos, np.float64)
        self.contact_threshold_n = float(contact_threshold_n)
        self.action_clip = float(action_clip)
        self.command = jump_command(0.0, 0.0, 0.0)
        self.phases = JumpPhaseTracker()
        self.previous_action = np.zeros_like(self.default_joint_pos)
        self.start_s: float | None = None

    def start(self, command: np.ndarray) -> None:
        """A new episode towards command [13]: not jumped yet, no previous action, clock at the next state."""
        command = np.asarray(command, np.float64)
        if command.shape != (JUMP_COMMAND_DIM,):
            raise ValueError(f"a jump command has {JUMP_COMMAND_DIM} values, got shape {command.shape}")
        self.command = command
        self.phases = JumpPhaseTracker()
        self.previous_action = np.zeros_like(self.default_joint_pos)
        self.start_s = None

    def episode_time_s(self, stamp_s: float) -> float:
        return 0.0 if self.start_s is None else stamp_s - self.start_s

    def observe(self, state: LeggedState) -> np.ndarray:
        """float32 [57] in JUMP_OBSERVATION_LAYOUT order; updates the has_jumped latch with the state."""
        if self.start_s is None:
            self.start_s = state.stamp_s
        self.phases.update(state.foot_contact(self.contact_threshold_n))
        return np.concatenate(
            (
                state.projected_gravity_b(),
                np.asarray(state.angular_velocity_b, np.float64),
                np.asarray(state.joint_pos, np.float64) - self.default_joint_pos,
                np.asarray(state.joint_vel, np.float64),
                self.previous_action,
                self.command,
                (float(self.phases.has_jumped), self.episode_time_s(state.stamp_s)),
            )
        ).astype(np.float32)

    def record_action(self, action: np.ndarray) -> None:
        """The action the policy took on the last observation, clipped as the training env clipped it (a
        non-finite one counts as 0, as there)."""
        action = np.asarray(action, np.float64)
        if not np.isfinite(action).all():
            action = np.zeros_like(action)
        self.previous_action = np.clip(action, -self.action_clip, self.action_clip)


@dataclass(frozen=True)
class JumpOutcome:
    """One jump scored like the jump env scores an episode, from ground truth (a simulator's)."""

    jumped: bool
    """Every foot was off the ground at some point after the command."""
    landed: bool
    apex_gain_m: float
    """Highest base height before the first landing minus the height at the command [m]."""
    landing_position_rel_m: tuple[float, float]
    """Base position at the first landing minus the one at the command, in the start heading frame [m]."""
    landing_error_m: float
    """Horizontal distance of the first landing from the commanded one [m] (NaN without a landing)."""
    landing_yaw_error_rad: float


def jump_outcome(
    times_s: np.ndarray,
    base_pos_w: np.ndarray,
    base_yaw_rad: np.ndarray,
    foot_contact: np.ndarray,
    start_s: float,
    command: np.ndarray,
) -> JumpOutcome:
    """Score the jump commanded at start_s from per-period rows: times [T], base positions [T, 3], yaws [T],
    foot contacts [T, F]; command [13] as `jump_command` gives it."""
    after = np.flatnonzero(np.asarray(times_s) >= start_s)
    if after.size == 0:
        raise ValueError(f"no state at or after the jump command at {start_s:.3f} s")
    first = after[0]
    start_pos, start_yaw = np.asarray(base_pos_w[first], np.float64), float(base_yaw_rad[first])
    phases, apex, landing = JumpPhaseTracker(), start_pos[2], None
    for k in after:
        if not phases.has_landed:
            apex = max(apex, float(base_pos_w[k][2]))
        if phases.update(foot_contact[k]) and landing is None:
            landing = k
    nan = (math.nan, math.nan)
    if landing is None:
        return JumpOutcome(phases.has_jumped, False, apex - start_pos[2], nan, math.nan, math.nan)
    c, s = math.cos(start_yaw), math.sin(start_yaw)
    dx, dy = (np.asarray(base_pos_w[landing][:2], np.float64) - start_pos[:2]).tolist()
    rel = (c * dx + s * dy, -s * dx + c * dy)
    command_yaw = 2.0 * math.atan2(float(command[6]), float(command[3]))
    yaw_error = float(base_yaw_rad[landing]) - start_yaw - command_yaw
    return JumpOutcome(
        jumped=True,
        landed=True,
        apex_gain_m=apex - start_pos[2],
        landing_position_rel_m=rel,
        landing_error_m=math.hypot(rel[0] - float(command[0]), rel[1] - float(command[1])),
        landing_yaw_error_rad=abs(math.remainder(yaw_error, 2.0 * math.pi)),
    )
