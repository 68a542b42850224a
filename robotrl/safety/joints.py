"""Safety for robots commanded by joint targets (a quadruped): the limits, the joint filters, damped joints.

The chain's action is the joint targets [rad], one a joint in motor order; a NaN target asks the joint's
driver for damping (kp 0, kd the profile's damping_kd). That is the stop action, and the fallback: every
joint damped, latched until reset like any fault. Damping needs no model and no state to work, lets the
robot sit down slowly wherever it is, and keeps PD loops from fighting the ground after a fall.

Monitors: finite, stale state, stale action (shared with the quadrotor), joint velocity, body tilt.
Limiters: the PD torque a target implies, then the joint range (last, so every target sent is inside it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robotrl.control.legged import JointProfile, LeggedState
from robotrl.safety.config import (
    SafetyConfigError,
    fail,
    limits_from_mapping,
    positive_limit,
    vector_limit,
)
from robotrl.safety.filters import (
    FilterContext,
    FiniteGuard,
    SafetyFilter,
    StaleActionWatchdog,
    StaleStateWatchdog,
    Status,
    Verdict,
)

DAMPED = math.nan
"""The joint target that means: damp this joint (kp 0, kd damping_kd)."""


def _joints(names: Sequence[str], index: np.ndarray) -> str:
    return ", ".join(names[i] for i in index)


@dataclass(frozen=True)
class JointSafetyLimits:
    """What the joint chain enforces (the `safety:` section of a legged robot's hardware/<robot>.yaml), for
    the joints of the `joints:` section. Per-joint values are in motor order."""

    joints: JointProfile
    joint_low_rad: tuple[float, ...]
    """Lowest target of each joint [rad] (the mechanical range, or inside it)."""
    joint_high_rad: tuple[float, ...]
    max_joint_velocity_radps: tuple[float, ...]
    """Faster than this, a joint faults [rad/s]."""
    max_torque_nm: tuple[float, ...]
    """Targets are moved so that the PD torque they imply stays within this [N m]."""
    max_tilt_deg: float
    """Largest angle between the body z axis and world up while a foot touches the ground [deg] ..."""
    max_flight_tilt_deg: float
    """... and while none does (a jump's flight) [deg]."""
    state_timeout_s: float
    action_timeout_s: float
    proof_of_life_hz: float
    proof_of_life_s: float
    """As the quadrotor's SafetyLimits: stale state and action, and the stream arming needs."""
    source: str = field(default="JointSafetyLimits(...)", compare=False)

    def __post_init__(self) -> None:
        n = self.joints.num_joints
        low = vector_limit(self, "joint_low_rad", n)
        high = vector_limit(self, "joint_high_rad", n)
        for name, lo, hi, default in zip(
            self.joints.names, low, high, self.joints.default_pos_rad, strict=True
        ):
            if not lo < hi:
                fail("joint_low_rad", self.joint_low_rad, f"{name}: low {lo} must be < high {hi}")
            if not lo <= default <= hi:
                fail("joint_low_rad", self.joint_low_rad, f"{name}: default pose {default} is outside it")
        for vector in ("max_joint_velocity_radps", "max_torque_nm"):
            if min(vector_limit(self, vector, n)) <= 0:
                fail(vector, getattr(self, vector), "every joint's limit must be > 0")
        for name in ("max_tilt_deg", "max_flight_tilt_deg", "state_timeout_s", "action_timeout_s",
                     "proof_of_life_hz", "proof_of_life_s"):  # fmt: skip
            positive_limit(self, name)
        if not self.max_tilt_deg <= self.max_flight_tilt_deg <= 180.0:
            fail("max_flight_tilt_deg", self.max_flight_tilt_deg, "must be in [max_tilt_deg, 180] deg")

    @staticmethod
    def from_mapping(mapping: Mapping[str, Any], joints: JointProfile, source: str) -> JointSafetyLimits:
        return limits_from_mapping(JointSafetyLimits, mapping, source, joints=joints)

    @property
    def stop_action(self) -> tuple[float, ...]:
        """Every joint damped."""
        return (DAMPED,) * self.joints.num_joints

    def monitors(self) -> tuple[SafetyFilter, ...]:
        return (
            FiniteGuard(),
            StaleStateWatchdog(self.state_timeout_s),
            StaleActionWatchdog(self.action_timeout_s),
            JointVelocityLimit(np.asarray(self.max_joint_velocity_radps), self.joints.names),
            BodyTilt(self.max_tilt_deg, self.max_flight_tilt_deg, self.joints.contact_threshold_n),
        )

    def limiters(self) -> tuple[SafetyFilter, ...]:
        j = self.joints
        return (
            TorqueLimit(np.asarray(self.max_torque_nm), j.kp, j.kd, j.names),
            JointRange(np.asarray(self.joint_low_rad), np.asarray(self.joint_high_rad), j.names),
        )

    def arming_problem(self, state: LeggedState) -> str:
        """The policy takes over a standing robot only: not one lying on its side."""
        tilt = math.degrees(state.tilt_rad())
        if not tilt <= self.max_tilt_deg:
            return f"the body is tilted {tilt:.1f} deg (max_tilt_deg {self.max_tilt_deg}): stand it up first"
        return ""


@dataclass(frozen=True, eq=False)
class JointVelocityLimit:
    """A joint faster than its limit: the policy shakes the leg, or the leg hit something and bounced."""

    max_radps: np.ndarray
    names: tuple[str, ...]
    name: str = field(default="joint_velocity", init=False)

    def __call__(self, action: np.ndarray, ctx: FilterContext[LeggedState]) -> tuple[np.ndarray, Status]:
        if ctx.state is None:
            return action, Status(self.name, Verdict.FAULT, "no state to check joint velocities against")
        speed = np.abs(np.asarray(ctx.state.joint_vel, np.float64))
        over = np.flatnonzero(~(speed <= self.max_radps))
        if over.size == 0:
            return action, Status(self.name, Verdict.OK)
        detail = ", ".join(f"{self.names[i]} {speed[i]:.3g} > {self.max_radps[i]:.3g}" for i in over)
        return action, Status(self.name, Verdict.FAULT, f"joint velocity [rad/s]: {detail}")


@dataclass(frozen=True)
class BodyTilt:
    """A trunk tilted past the limit has fallen or is falling. A jump pitches the body, and in flight the
    policy still lands better than limp legs would, so a larger limit applies while no foot touches; it
    stays below 90 deg so that a robot on its side, feet in the air and touching nothing, still faults."""

    max_stance_deg: float
    max_flight_deg: float
    contact_threshold_n: float
    name: str = field(default="tilt", init=False)

    def __call__(self, action: np.ndarray, ctx: FilterContext[LeggedState]) -> tuple[np.ndarray, Status]:
        if ctx.state is None:
            return action, Status(self.name, Verdict.FAULT, "no state to check the tilt against")
        airborne = ctx.state.airborne(self.contact_threshold_n)
        limit = self.max_flight_deg if airborne else self.max_stance_deg
        tilt = math.degrees(ctx.state.tilt_rad())
        if tilt <= limit:
            return action, Status(self.name, Verdict.OK)
        phase = "in flight" if airborne else "on the ground"
        return action, Status(self.name, Verdict.FAULT, f"tilt {tilt:.3g} deg > limit {limit} deg {phase}")


@dataclass(frozen=True, eq=False)
class TorqueLimit:
    """Move each target so that the PD torque it implies at the current state, kp (target - q) - kd qd,
    stays within the joint's limit.

    A clip, not a fault: a jump's take-off saturates the joints by design (the training sim's actuators
    clip at the URDF's effort limits), so a fault would end every jump. The clipped target asks for the
    torque the motor would have delivered at this state anyway, and a limit set below the motor's peak
    (thermal headroom) then really bounds it. The bound holds at the state the command answers; as the
    joint moves towards the target within the period the torque falls, so a limit at the motor's peak
    still gives a little less than saturation did in training. Without a usable state no torque can be
    bounded: those joints are damped.
    """

    max_nm: np.ndarray
    kp: float
    kd: float
    names: tuple[str, ...]
    name: str = field(default="torque", init=False)

    def __call__(self, action: np.ndarray, ctx: FilterContext[LeggedState]) -> tuple[np.ndarray, Status]:
        if ctx.state is None:
            q = qd = np.full_like(action, np.nan)
        else:
            q, qd = np.asarray(ctx.state.joint_pos), np.asarray(ctx.state.joint_vel)
        centre = q + self.kd * qd / self.kp
        half = self.max_nm / self.kp
        # The decision is taken on the torque itself: the clip bounds, rounded apart from it, moved targets
        # whose torque was exactly at the limit (found by hypothesis). np.clip keeps NaN (damped) targets and
        # turns finite ones NaN where the state is NaN (a NaN torque is never within).
        within = np.abs(self.kp * (action - q) - self.kd * qd) <= self.max_nm
        limited = np.where(within, action, np.clip(action, centre - half, centre + half))
        changed = np.flatnonzero(~np.isnan(action) & ~(limited == action))
        if changed.size == 0:
            return limited, Status(self.name, Verdict.OK)
        damped = changed[np.isnan(limited[changed])]
        reason = f"target(s) of {_joints(self.names, changed)} moved to keep |PD torque| within the limit"
        if damped.size:
            reason += f"; {_joints(self.names, damped)} damped: no usable state to bound their torque"
        return limited, Status(self.name, Verdict.MODIFIED, reason)


@dataclass(frozen=True, eq=False)
class JointRange:
    """Clip targets into the joint range: a target past a mechanical stop drives the joint into it."""

    low: np.ndarray
    high: np.ndarray
    names: tuple[str, ...]
    name: str = field(default="joint_range", init=False)

    def __call__(self, action: np.ndarray, ctx: FilterContext[LeggedState]) -> tuple[np.ndarray, Status]:
        clipped = np.clip(action, self.low, self.high)
        changed = np.flatnonzero(clipped != action)
        changed = changed[~np.isnan(action[changed])]
        if changed.size == 0:
            return clipped, Status(self.name, Verdict.OK)
        return clipped, Status(self.name, Verdict.MODIFIED, f"{_joints(self.names, changed)} clipped")


class DampedFallback:
    """Every joint damped, from the fault on (see the module docstring for why)."""

    def __init__(self, num_joints: int):
        self._damped = np.full(num_joints, DAMPED)

    def engage(self, state: LeggedState, now_s: float) -> None:
        """Nothing to prepare: damping holds no setpoint."""

    def act(self, state: LeggedState, now_s: float, previous_action: np.ndarray) -> np.ndarray:
        return self._damped.copy()


def check_joints_against_bundle(
    limits: JointSafetyLimits,
    platform: str,
    bundle_robot: str,
    bundle_safety_limits: Mapping[str, Any],
    action_low: Sequence[float],
    action_high: Sequence[float],
) -> None:
    """Refuse a bundle trained for another robot, other joints or another PD; lists every mismatch.

    The policy's actions mean joint targets only through the default pose, the action scale and the PD
    gains it was trained with, so those must be the robot's. Bundle keys that are absent are skipped.
    """
    joints, problems = limits.joints, []
    if bundle_robot != platform:
        problems.append(f"the bundle was trained for robot {bundle_robot!r}, this robot is {platform!r}")
    if len(action_low) != joints.num_joints:
        problems.append(
            f"the bundle has {len(action_low)} actions, this robot {joints.num_joints} joints: "
            "this bundle is for another robot"
        )
    elif not (min(action_low) <= -joints.action_clip and joints.action_clip <= max(action_high)):
        problems.append(
            f"action_clip {joints.action_clip} lets actions outside the bundle's bounds "
            f"[{min(action_low)}, {max(action_high)}]"
        )
    for key, robot_value in (
        ("kp", joints.kp),
        ("kd", joints.kd),
        ("action_scale", joints.action_scale),
        ("hip_action_scale", joints.hip_action_scale),
    ):
        if key in bundle_safety_limits and not math.isclose(bundle_safety_limits[key], robot_value):
            problems.append(
                f"{key} is {robot_value} here, the bundle was trained with {bundle_safety_limits[key]}"
            )
    default = bundle_safety_limits.get("default_joint_pos_rad")
    if default is not None and not np.allclose(default, joints.default_pos_rad, atol=1e-6):
        problems.append(
            f"default_pos_rad is {list(joints.default_pos_rad)}, the bundle was trained with {default}"
        )
    if problems:
        raise SafetyConfigError(
            f"robot {limits.source} cannot run this policy bundle:\n  " + "\n  ".join(problems)
        )
