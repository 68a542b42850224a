"""A robot's safety limits (the `safety:` section of its hardware/<robot>.yaml), checked on load.

Every limit is required: a robot file that forgets one must not fly on a default chosen for another
robot. Errors name the field, the value and what is allowed, because whoever reads them is standing
next to the robot. `check_against_bundle` closes the loop with training: the robot may be stricter
than the conditions the policy was trained under, never looser.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np
import yaml

from robotrl.control.state import RobotState
from robotrl.safety.filters import (
    ActionBounds,
    FiniteGuard,
    Geofence,
    SafetyFilter,
    SlewRateLimit,
    StaleActionWatchdog,
    StaleStateWatchdog,
    StateLimit,
    angular_speed_radps,
    speed_mps,
    tilt_deg,
    tracking_error_m,
)


class SafetyConfigError(ValueError):
    """A safety limit is missing, malformed or out of range, or looser than the policy bundle allows."""


@dataclass(frozen=True)
class SafetyLimits:
    """What the safety chain enforces. World frame z-up; actions in the policy's units (per dimension)."""

    action_low: tuple[float, ...]
    """Lowest command per action dimension (quadrotor: -1 = motor off)."""
    action_high: tuple[float, ...]
    """Highest command per action dimension (quadrotor: +1 = full thrust)."""
    stop_action: tuple[float, ...]
    """Sent while disarmed and on e-stop; must lie inside the bounds (quadrotor: all -1, motors at zero)."""
    max_action_rate_per_s: float
    """Largest change of any action dimension per second [action units/s] (slew limit)."""
    geofence_min_m: tuple[float, float, float]
    """Lower corner of the allowed box [m]; its z is the floor the landing fallback descends to."""
    geofence_max_m: tuple[float, float, float]
    """Upper corner of the allowed box [m]."""
    max_tilt_deg: float
    """Largest angle between body z and world up [deg]."""
    max_speed_mps: float
    """Largest linear speed [m/s]."""
    max_angular_velocity_radps: float
    """Largest body rate norm [rad/s]."""
    max_tracking_error_m: float
    """Largest distance from the reference position [m] (checked only when a reference is given)."""
    state_timeout_s: float
    """A state older than this is stale [s]."""
    action_timeout_s: float
    """No new policy action for this long means the policy stopped [s]."""
    proof_of_life_hz: float
    """Arming needs policy actions at least this often [Hz] ..."""
    proof_of_life_s: float
    """... without a gap for at least this long [s], like PX4's offboard setpoint stream."""
    source: str = field(default="SafetyLimits(...)", compare=False)
    """Where the limits were read from: the file errors tell the operator to edit."""

    def __post_init__(self) -> None:
        low = vector_limit(self, "action_low", None)
        high = vector_limit(self, "action_high", len(low))
        stop = vector_limit(self, "stop_action", len(low))
        if not low:
            fail("action_low", self.action_low, "needs at least one action dimension")
        for i, (lo, hi, s) in enumerate(zip(low, high, stop, strict=True)):
            if not lo < hi:
                fail("action_low", self.action_low, f"dimension {i}: low {lo} must be < high {hi}")
            if not lo <= s <= hi:
                fail("stop_action", self.stop_action, f"dimension {i}: {s} must lie in [{lo}, {hi}]")
        fence_min = vector_limit(self, "geofence_min_m", 3)
        fence_max = vector_limit(self, "geofence_max_m", 3)
        for axis, lo, hi in zip("xyz", fence_min, fence_max, strict=True):
            if not lo < hi:
                fail("geofence_min_m", self.geofence_min_m, f"{axis}: min {lo} m must be < max {hi} m")
        for name in _POSITIVE:
            positive_limit(self, name)
        if self.max_tilt_deg > 180.0:
            fail("max_tilt_deg", self.max_tilt_deg, "must be in (0, 180] deg")

    @staticmethod
    def from_mapping(mapping: Mapping[str, Any], source: str = "safety mapping") -> SafetyLimits:
        """Limits from a parsed `safety:` section; unknown and missing keys are errors listing the allowed."""
        return limits_from_mapping(SafetyLimits, mapping, source)

    @staticmethod
    def from_yaml(path: str | Path) -> SafetyLimits:
        """The `safety:` section of a robot file such as hardware/crazyflie_sim.yaml."""
        try:
            document = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise SafetyConfigError(f"{path}: cannot read the robot file: {err}") from None
        if not isinstance(document, Mapping) or "safety" not in document:
            raise SafetyConfigError(f"{path}: no 'safety:' section; see hardware/crazyflie_sim.yaml")
        return SafetyLimits.from_mapping(document["safety"], source=f"{path} (safety:)")

    @property
    def action_dim(self) -> int:
        return len(self.action_low)

    def monitors(self) -> tuple[SafetyFilter, ...]:
        """The checks that end the policy's control, in the order their faults are reported."""
        return (
            FiniteGuard(),
            StaleStateWatchdog(self.state_timeout_s),
            StaleActionWatchdog(self.action_timeout_s),
            self._geofence(),
            StateLimit("tilt", self.max_tilt_deg, "deg", tilt_deg),
            StateLimit("speed", self.max_speed_mps, "m/s", speed_mps),
            StateLimit("angular_velocity", self.max_angular_velocity_radps, "rad/s", angular_speed_radps),
            StateLimit("tracking_error", self.max_tracking_error_m, "m", tracking_error_m),
        )

    def limiters(self) -> tuple[SafetyFilter, ...]:
        """What every output goes through, the fallback's too: the motor bounds, then the slew limit."""
        return (
            ActionBounds(np.asarray(self.action_low), np.asarray(self.action_high)),
            SlewRateLimit(self.max_action_rate_per_s),
        )

    def arming_problem(self, state: RobotState) -> str:
        """Why a usable state must not be armed ('' when it may): the quadrotor is outside the geofence."""
        return self._geofence().violation(np.asarray(state.position_w, np.float64))

    def _geofence(self) -> Geofence:
        return Geofence(np.asarray(self.geofence_min_m), np.asarray(self.geofence_max_m))


_POSITIVE = (
    "max_action_rate_per_s",
    "max_tilt_deg",
    "max_speed_mps",
    "max_angular_velocity_radps",
    "max_tracking_error_m",
    "state_timeout_s",
    "action_timeout_s",
    "proof_of_life_hz",
    "proof_of_life_s",
)


LimitsT = TypeVar("LimitsT")


def limits_from_mapping(cls: type[LimitsT], mapping: Mapping[str, Any], source: str, **given: Any) -> LimitsT:
    """A limits dataclass from a parsed `safety:` section: every field but `source` and the `given` ones
    must be in the mapping, nothing else may be; errors list the allowed keys and name the file."""
    if not isinstance(mapping, Mapping):
        raise SafetyConfigError(f"{source}: expected a mapping of limits, got {type(mapping).__name__}")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    allowed = [f.name for f in fields if f.name != "source" and f.name not in given]
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise SafetyConfigError(f"{source}: unknown key(s) {unknown}; allowed: {allowed}")
    missing = [name for name in allowed if name not in mapping]
    if missing:
        raise SafetyConfigError(f"{source}: missing key(s) {missing}; every robot sets all of {allowed}")
    try:
        return cls(**mapping, **given, source=source)
    except SafetyConfigError as err:
        raise SafetyConfigError(f"{source}: {err}") from None


def fail(name: str, value: object, problem: str) -> NoReturn:
    raise SafetyConfigError(f"safety limit '{name}' = {value!r}: {problem}")


def number_limit(name: str, value: object, shown: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        fail(name, shown, "must be a number")
    number = float(value)
    if not math.isfinite(number):
        fail(name, shown, "must be finite")
    return number


def vector_limit(limits: object, name: str, length: int | None) -> tuple[float, ...]:
    """Check a per-dimension field, store it as a tuple of floats, and return it."""
    value = getattr(limits, name)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        fail(name, value, "must be a list of numbers")
    numbers = tuple(number_limit(name, v, value) for v in value)
    if length is not None and len(numbers) != length:
        fail(name, value, f"needs {length} values, got {len(numbers)}")
    object.__setattr__(limits, name, numbers)
    return numbers


def positive_limit(limits: object, name: str) -> None:
    value = number_limit(name, getattr(limits, name), getattr(limits, name))
    if value <= 0:
        fail(name, value, "must be > 0")
    object.__setattr__(limits, name, value)


BUNDLE_LIMITS = {
    "max_tracking_error_m": "max_position_error_m",
    "max_speed_mps": "max_linear_velocity_mps",
    "max_angular_velocity_radps": "max_angular_velocity_radps",
}
"""Robot limit -> the policy.yaml `safety_limits` key it must not exceed."""


def check_against_bundle(
    limits: SafetyLimits,
    bundle_safety_limits: Mapping[str, Any],
    action_low: Sequence[float],
    action_high: Sequence[float],
) -> None:
    """Refuse a robot that allows more than the policy was trained under; lists every violation at once.

    The policy has never seen states beyond its training limits, so the chain must hand over to the
    fallback before the robot gets there. Bundle keys that are absent are skipped (older bundles).
    """
    fix = f"tighten it in {limits.source} or deploy a policy trained under looser limits"
    problems = []
    for robot_name, bundle_name in BUNDLE_LIMITS.items():
        if bundle_name not in bundle_safety_limits:
            continue
        bundle_value = bundle_safety_limits[bundle_name]
        robot_value = getattr(limits, robot_name)
        if isinstance(bundle_value, bool) or not isinstance(bundle_value, int | float):
            problems.append(f"bundle safety_limits.{bundle_name} = {bundle_value!r} is not a number")
        elif not robot_value <= bundle_value:
            problems.append(
                f"{robot_name} = {robot_value} exceeds the bundle's {bundle_name} = {bundle_value}: {fix}"
            )
    if len(action_low) != limits.action_dim or len(action_high) != limits.action_dim:
        problems.append(
            f"the robot has {limits.action_dim} action dimensions, the bundle "
            f"{len(action_low)} low / {len(action_high)} high bounds: this bundle is for another robot"
        )
    else:
        for i, (lo, hi, b_lo, b_hi) in enumerate(
            zip(limits.action_low, limits.action_high, action_low, action_high, strict=True)
        ):
            if not b_lo <= lo <= hi <= b_hi:
                problems.append(
                    f"action dimension {i}: robot bounds [{lo}, {hi}] are not inside the bundle's "
                    f"[{b_lo}, {b_hi}] (action_low/action_high): {fix}"
                )
    if problems:
        raise SafetyConfigError(
            f"robot limits ({limits.source}) are looser than the policy bundle allows:\n  "
            + "\n  ".join(problems)
        )
