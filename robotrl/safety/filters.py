"""The filters of the safety chain: each sees one step's context and returns (allowed action, Status).

Filters are stateless: the chain owns every piece of history (its last output, when the last fresh
policy action arrived) and the latching, so a filter can be tested alone and a fault means the same
wherever it is raised. Checks are written as `not value <= limit`, so NaN fails them: a filter never
passes a state it cannot judge.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from robotrl.control.state import RobotState


class Verdict(StrEnum):
    OK = "ok"
    MODIFIED = "modified"
    """The action was changed (clipped, slowed); the reason says how."""
    FAULT = "fault"
    """The policy must not be trusted any more; the chain latches it and hands over to the fallback."""


@dataclass(frozen=True)
class Status:
    filter: str
    verdict: Verdict
    reason: str = ""


class MeasuredState(Protocol):
    """What the chain itself needs of a robot's state (a quadrotor's RobotState, a LeggedState)."""

    @property
    def stamp_s(self) -> float:
        """When the state was measured, on the chain's clock [s]."""
        ...

    def is_finite(self) -> bool: ...


StateT = TypeVar("StateT", bound=MeasuredState)


@dataclass(frozen=True, eq=False)
class FilterContext(Generic[StateT]):
    """Everything a filter may look at besides the proposed action. Times on the chain's clock [s]."""

    now_s: float
    state: StateT | None
    """The latest state, None when none has been received."""
    reference_position_w: np.ndarray | None
    """[3] where the robot should be [m], None when nothing is tracked."""
    last_action_s: float | None
    """When the latest fresh policy action was produced (never later than its arrival); None: none yet."""
    previous_action: np.ndarray
    """The chain's last output (stop_action before the first)."""
    previous_s: float | None
    """When the chain sent previous_action; None before the first output."""


class SafetyFilter(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(self, action: np.ndarray, ctx: FilterContext[Any]) -> tuple[np.ndarray, Status]: ...


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.ravel(values)) + "]"


def _norm(values: np.ndarray | list[float]) -> float:
    """Euclidean norm in Python floats: absurd values give inf (which fails every check), not a warning."""
    return math.hypot(*(float(v) for v in np.ravel(values)))


def state_problem(state: MeasuredState | None, now_s: float, timeout_s: float) -> str:
    """Why the state cannot be used ('' when it can): shared by the watchdog, arming and the fallback."""
    if state is None:
        return "no state received yet"
    if not state.is_finite():
        return "the state holds non-finite values"
    age_s = now_s - state.stamp_s
    if not age_s <= timeout_s:
        return f"the state is {age_s:.3f} s old (state_timeout_s {timeout_s})"
    return ""


@dataclass(frozen=True)
class FiniteGuard:
    """NaN or Inf anywhere means a broken sensor, message or network: nothing downstream can judge it."""

    name: str = field(default="finite", init=False)

    def __call__(self, action: np.ndarray, ctx: FilterContext) -> tuple[np.ndarray, Status]:
        if not np.isfinite(action).all():
            return action, Status(self.name, Verdict.FAULT, f"non-finite policy action {action.tolist()}")
        if ctx.state is not None and not ctx.state.is_finite():
            return action, Status(self.name, Verdict.FAULT, "non-finite state")
        ref = ctx.reference_position_w
        if ref is not None and not np.isfinite(ref).all():
            return action, Status(self.name, Verdict.FAULT, f"non-finite reference position {ref.tolist()}")
        return action, Status(self.name, Verdict.OK)


@dataclass(frozen=True)
class StaleStateWatchdog:
    """A policy acting on an old state flies blind."""

    timeout_s: float
    name: str = field(default="stale_state", init=False)

    def __call__(self, action: np.ndarray, ctx: FilterContext) -> tuple[np.ndarray, Status]:
        problem = state_problem(ctx.state, ctx.now_s, self.timeout_s)
        return action, Status(self.name, Verdict.FAULT if problem else Verdict.OK, problem)


@dataclass(frozen=True)
class StaleActionWatchdog:
    """The policy node died or hangs: its last action would otherwise be held forever.

    The age is counted on the sensor's clock, up to the newest state (now, before any state): the
    policy is late when states it could have answered kept coming. A stall that froze the sensor with
    it (a starved machine running the whole graph) is not a dead policy; a dead sensor is
    StaleStateWatchdog's.
    """

    timeout_s: float
    name: str = field(default="stale_action", init=False)

    def __call__(self, action: np.ndarray, ctx: FilterContext) -> tuple[np.ndarray, Status]:
        if ctx.last_action_s is None:
            return action, Status(self.name, Verdict.FAULT, "no policy action received yet")
        newest_s = ctx.now_s if ctx.state is None else min(ctx.state.stamp_s, ctx.now_s)
        age_s = newest_s - ctx.last_action_s
        if not age_s <= self.timeout_s:
            return action, Status(
                self.name,
                Verdict.FAULT,
                f"no new policy action for {age_s:.3f} s of states (action_timeout_s {self.timeout_s}): "
                "the policy stopped",
            )
        return action, Status(self.name, Verdict.OK)


@dataclass(frozen=True, eq=False)
class Geofence:
    """A world-frame box; leaving it means the policy is somewhere it was never meant to be."""

    min_m: np.ndarray
    max_m: np.ndarray
    name: str = field(default="geofence", init=False)

    def violation(self, position_w: np.ndarray) -> str:
        if (self.min_m <= position_w).all() and (position_w <= self.max_m).all():
            return ""
        return (
            f"position {_fmt(position_w)} m is outside the geofence {_fmt(self.min_m)} to {_fmt(self.max_m)}"
        )

    def __call__(self, action: np.ndarray, ctx: FilterContext[RobotState]) -> tuple[np.ndarray, Status]:
        if ctx.state is None:
            return action, Status(self.name, Verdict.FAULT, "no state to check the geofence against")
        problem = self.violation(np.asarray(ctx.state.position_w, np.float64))
        return action, Status(self.name, Verdict.FAULT if problem else Verdict.OK, problem)


@dataclass(frozen=True)
class StateLimit:
    """One scalar measure of the state that must stay <= limit (tilt, speed, body rate, tracking error)."""

    name: str
    limit: float
    unit: str
    measure: Callable[[RobotState, np.ndarray | None], float | None]
    """The value to check; None when it does not apply (no reference to track)."""

    def __call__(self, action: np.ndarray, ctx: FilterContext[RobotState]) -> tuple[np.ndarray, Status]:
        if ctx.state is None:
            return action, Status(self.name, Verdict.FAULT, f"no state to check {self.name} against")
        value = self.measure(ctx.state, ctx.reference_position_w)
        if value is None or value <= self.limit:
            return action, Status(self.name, Verdict.OK)
        return action, Status(
            self.name, Verdict.FAULT, f"{self.name} {value:.3g} {self.unit} > limit {self.limit} {self.unit}"
        )


def tilt_deg(state: RobotState, reference_position_w: np.ndarray | None) -> float:
    return math.degrees(state.tilt_rad())


def speed_mps(state: RobotState, reference_position_w: np.ndarray | None) -> float:
    return _norm(state.velocity_w)


def angular_speed_radps(state: RobotState, reference_position_w: np.ndarray | None) -> float:
    return _norm(state.angular_velocity_b)


def tracking_error_m(state: RobotState, reference_position_w: np.ndarray | None) -> float | None:
    if reference_position_w is None:
        return None
    return _norm([float(p) - float(r) for p, r in zip(state.position_w, reference_position_w, strict=True)])


@dataclass(frozen=True, eq=False)
class ActionBounds:
    """Clip into [low, high]: the policy may ask for more than the hardware accepts."""

    low: np.ndarray
    high: np.ndarray
    name: str = field(default="bounds", init=False)

    def __call__(self, action: np.ndarray, ctx: FilterContext) -> tuple[np.ndarray, Status]:
        clipped = np.clip(action, self.low, self.high)
        changed = np.flatnonzero(clipped != action)
        if changed.size == 0:
            return clipped, Status(self.name, Verdict.OK)
        return clipped, Status(self.name, Verdict.MODIFIED, f"dimension(s) {changed.tolist()} clipped")


@dataclass(frozen=True)
class SlewRateLimit:
    """Move each dimension by at most rate * dt from the last output: no step commands to the motors.

    dt is the time since the chain's last output; a clock that stands still or runs back allows no change.
    """

    rate_per_s: float
    name: str = field(default="slew_rate", init=False)

    def __call__(self, action: np.ndarray, ctx: FilterContext) -> tuple[np.ndarray, Status]:
        if ctx.previous_s is None:
            return action, Status(self.name, Verdict.OK)
        max_step = self.rate_per_s * max(ctx.now_s - ctx.previous_s, 0.0)
        limited = np.clip(action, ctx.previous_action - max_step, ctx.previous_action + max_step)
        changed = np.flatnonzero(limited != action)
        if changed.size == 0:
            return limited, Status(self.name, Verdict.OK)
        return limited, Status(
            self.name, Verdict.MODIFIED, f"dimension(s) {changed.tolist()} limited to {max_step:.3g} per step"
        )
