"""The safety chain between a policy and the actuators, the same object in simulation and on the robot.

Modes: DISARMED (stop_action) -> arm() -> POLICY -> a fault -> FALLBACK; estop() -> ESTOP from anywhere;
reset() -> DISARMED from anywhere. The caller steps it once per control period (or on each new action).
The robot's limits name its filters (`monitors()`, `limiters()`) and its arming check, so one chain
serves every robot: a quadrotor's `SafetyLimits`, a legged robot's `JointSafetyLimits`.

Why faults latch: a fault says the policy met a state or an input it cannot be trusted with. Handing
control back the moment the symptom clears would let a marginal policy oscillate between itself and
the fallback, which is worse than either; a person looks, then calls reset() and re-arms.

Why the fallback's output still goes through the limiters (a quadrotor's bounds and slew limit): the
fallback runs exactly when something already went wrong, on states nobody tested it on. Limited, a
fallback bug can at worst stop the robot; it can never command more than the policy was allowed to.
Only e-stop and disarm jump straight to stop_action: a person or the arming logic asked for it.

NaN in a dimension of stop_action means "no command" there (a legged robot's damped joint): the
fallback may send NaN exactly where stop_action has it, and nowhere else.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from robotrl.safety.fallback import Fallback
from robotrl.safety.filters import (
    FilterContext,
    MeasuredState,
    SafetyFilter,
    Status,
    Verdict,
    state_problem,
)

_log = logging.getLogger(__name__)


class ChainLimits(Protocol):
    """What the chain needs from a robot's limits: its stop action, arming rules and filters."""

    @property
    def stop_action(self) -> tuple[float, ...]: ...

    @property
    def state_timeout_s(self) -> float: ...

    @property
    def proof_of_life_hz(self) -> float: ...

    @property
    def proof_of_life_s(self) -> float: ...

    def monitors(self) -> tuple[SafetyFilter, ...]:
        """Checks of the policy's action and the state, in order; the first fault ends the policy's turn."""
        ...

    def limiters(self) -> tuple[SafetyFilter, ...]:
        """Changes every output goes through, in order, the fallback's too."""
        ...

    def arming_problem(self, state: Any) -> str:
        """Why a usable state must not be armed; '' when it may."""
        ...


class Mode(StrEnum):
    DISARMED = "disarmed"
    POLICY = "policy"
    FALLBACK = "fallback"
    ESTOP = "estop"


@dataclass(frozen=True)
class Fault:
    filter: str
    reason: str
    time_s: float
    """When it latched, on the chain's clock [s]."""


@dataclass(frozen=True, eq=False)
class SafetyOutput:
    action: np.ndarray
    """float32 [action_dim]: what to send to the actuators."""
    mode: Mode
    statuses: tuple[Status, ...]
    """Every filter that changed the action or faulted this step, in chain order (OK ones are left out)."""
    fault: Fault | None
    """The latched fault, None when none is latched."""


class SafetyChain:
    """Filters in order: the limits' monitors (quadrotor: finite, stale state, stale action, geofence,
    tilt, speed, body rate, tracking error) then their limiters (quadrotor: bounds, slew). In POLICY mode
    the policy's action goes through all of them, and the first fault latches; in FALLBACK mode the
    fallback's action goes through the limiters.
    """

    def __init__(self, limits: ChainLimits, fallback: Fallback):
        self.limits = limits
        self.fallback = fallback
        self.limiters: tuple[SafetyFilter, ...] = limits.limiters()
        self.filters: tuple[SafetyFilter, ...] = (*limits.monitors(), *self.limiters)
        self.mode = Mode.DISARMED
        self.fault: Fault | None = None
        """The latched fault; reset() clears it."""
        self.first_fault: Fault | None = None
        """The first fault this chain ever latched, kept through reset() for the flight record."""
        self.transitions: Counter[tuple[Mode, Mode]] = Counter()
        """How often each (from, to) mode change happened."""
        self._stop = np.asarray(limits.stop_action, np.float64)
        self._estop_reason = ""
        self._state: MeasuredState | None = None
        self._previous = self._stop.copy()
        self._previous_s: float | None = None
        self._last_stamp: float | None = None
        self._last_action_s: float | None = None
        self._action_times: deque[float] = deque()
        self._fallback_engaged = False

    @property
    def armed(self) -> bool:
        """True while the motors may run (POLICY or FALLBACK)."""
        return self.mode in (Mode.POLICY, Mode.FALLBACK)

    def step(
        self,
        state: MeasuredState | None,
        action: ArrayLike,
        now_s: float,
        reference_position_w: ArrayLike | None = None,
        *,
        action_stamp_s: float | None,
    ) -> SafetyOutput:
        """The action to send now. Shapes are wiring and raise ValueError; bad values are faults.

        state: the latest state, None before the first. action: the latest policy action, held until a
        new one arrives. action_stamp_s: when the policy produced it; a stamp different from the last
        one marks a fresh action (the watchdog and the arming proof of life count those), None while no
        action has arrived. reference_position_w: [3] the tracked position [m], or None.
        """
        now_s = _finite_time(now_s)
        proposed = np.asarray(action, np.float64)
        if proposed.shape != self._stop.shape:
            raise ValueError(f"action must have shape {self._stop.shape}, got {proposed.shape}")
        reference = None if reference_position_w is None else np.asarray(reference_position_w, np.float64)
        if reference is not None and reference.shape != (3,):
            raise ValueError(f"reference_position_w must have shape (3,), got {reference.shape}")
        self._state = state
        self._note_action(proposed, action_stamp_s, now_s)
        ctx = FilterContext(now_s, state, reference, self._last_action_s, self._previous, self._previous_s)

        statuses: tuple[Status, ...] = ()
        if self.mode is Mode.POLICY:
            out, statuses = _run(self.filters, proposed, ctx)
            fault = next((s for s in statuses if s.verdict is Verdict.FAULT), None)
            if fault is not None:
                self._latch(fault, now_s)
        if self.mode is Mode.FALLBACK:
            out, fallback_statuses = self._fallback_action(ctx)
            statuses += fallback_statuses
        elif self.mode is Mode.ESTOP:
            out, statuses = self._stop, (Status("estop", Verdict.FAULT, self._estop_reason),)
        elif self.mode is Mode.DISARMED:
            out, statuses = self._stop, (Status("disarmed", Verdict.MODIFIED, "disarmed: stop_action"),)

        sent = out.astype(np.float32)
        self._previous, self._previous_s = sent.astype(np.float64), now_s
        return SafetyOutput(sent, self.mode, statuses, self.fault)

    def arm(self, bundle_ok: bool, now_s: float) -> tuple[bool, str]:
        """Hand control to the policy if it is safe to; otherwise (False, every reason it is not)."""
        now_s = _finite_time(now_s)
        if self.mode is Mode.ESTOP:
            return False, f"e-stop latched ({self._estop_reason}): call reset() first"
        if self.fault is not None:
            return False, f"fault latched ({self.fault.reason}): call reset() first"
        if self.mode is Mode.POLICY:
            return True, "already armed"
        problems = []
        if not bundle_ok:
            problems.append("the policy bundle was not accepted")
        state_issue = state_problem(self._state, now_s, self.limits.state_timeout_s)
        if state_issue:
            problems.append(state_issue)
        elif self._state is not None:
            problems.append(self.limits.arming_problem(self._state))
        problems.append(self._proof_of_life_problem(now_s))
        problems = [p for p in problems if p]
        if problems:
            _log.debug("arming refused: %s", "; ".join(problems))
            return False, "; ".join(problems)
        self._set_mode(Mode.POLICY)
        return True, "armed"

    def estop(self, reason: str = "e-stop") -> None:
        """stop_action from the next step on, whatever comes in, until reset()."""
        self._estop_reason = reason
        self._set_mode(Mode.ESTOP)

    def reset(self) -> None:
        """Clear a latched fault or e-stop and disarm: flying again needs arm()."""
        self.fault = None
        self._estop_reason = ""
        self._fallback_engaged = False
        self._set_mode(Mode.DISARMED)

    def _note_action(self, action: np.ndarray, stamp_s: float | None, now_s: float) -> None:
        if stamp_s is None or not math.isfinite(stamp_s) or stamp_s == self._last_stamp:
            return
        self._last_stamp = stamp_s
        # A stamp from the future (clock skew, garbage) counts as now, so it cannot keep the policy alive.
        produced_s = min(float(stamp_s), now_s)
        self._last_action_s = max(produced_s, self._last_action_s or produced_s)
        if np.isfinite(action).all():
            self._action_times.append(produced_s)
        while self._action_times and self._action_times[0] < now_s - self.limits.proof_of_life_s:
            self._action_times.popleft()

    def _proof_of_life_problem(self, now_s: float) -> str:
        rate_hz, span_s = self.limits.proof_of_life_hz, self.limits.proof_of_life_s
        start_s = now_s - span_s
        times = sorted(t for t in self._action_times if start_s <= t <= now_s)
        if len(times) < rate_hz * span_s - 1e-9:
            return (
                f"no proof of life: {len(times)} finite policy actions in the last {span_s} s, "
                f"arming needs {rate_hz * span_s:g} (a stream at >= {rate_hz} Hz)"
            )
        gap_s = float(np.max(np.diff([start_s, *times, now_s])))
        if gap_s > 1.0 / rate_hz + 1e-9:
            return (
                f"no proof of life: a {gap_s:.3f} s gap in the policy action stream "
                f"(max {1.0 / rate_hz:.3f} s)"
            )
        return ""

    def _fallback_action(self, ctx: FilterContext) -> tuple[np.ndarray, tuple[Status, ...]]:
        state = ctx.state
        problem = state_problem(state, ctx.now_s, self.limits.state_timeout_s)
        if problem or state is None:
            return self._ramp_to_stop(f"{problem}: ramping to stop_action", ctx)
        if not self._fallback_engaged:
            self.fallback.engage(state, ctx.now_s)
            self._fallback_engaged = True
        # Overflow on absurd (finite) states is expected here: the output is checked right after.
        with np.errstate(all="ignore"):
            proposed = np.asarray(self.fallback.act(state, ctx.now_s, self._previous.copy()), np.float64)
        if proposed.shape != self._stop.shape or not _usable(proposed, self._stop):
            reason = f"fallback output {proposed.tolist()} unusable: ramping to stop_action"
            return self._ramp_to_stop(reason, ctx)
        return _run(self.limiters, proposed, ctx)

    def _ramp_to_stop(self, reason: str, ctx: FilterContext) -> tuple[np.ndarray, tuple[Status, ...]]:
        """Through the limiters (a quadrotor's slew limit), unlike e-stop: the fallback keeps the no-jump
        promise even when it gives up."""
        action, statuses = _run(self.limiters, self._stop, ctx)
        return action, (Status("fallback", Verdict.MODIFIED, reason), *statuses)

    def _latch(self, status: Status, now_s: float) -> None:
        self.fault = Fault(status.filter, status.reason, now_s)
        self.first_fault = self.first_fault or self.fault
        self._fallback_engaged = False
        _log.warning("safety fault latched at %.3f s by %s: %s", now_s, status.filter, status.reason)
        self._set_mode(Mode.FALLBACK)

    def _set_mode(self, mode: Mode) -> None:
        if mode is not self.mode:
            self.transitions[(self.mode, mode)] += 1
            self.mode = mode


def _usable(action: np.ndarray, stop: np.ndarray) -> bool:
    """Finite, or NaN where stop_action is NaN ("no command" there)."""
    return bool((np.isfinite(action) | (np.isnan(action) & np.isnan(stop))).all())


def _finite_time(now_s: float) -> float:
    """The clock is the caller's, not a measurement: a non-finite time is a wiring bug, raised at once."""
    now_s = float(now_s)
    if not math.isfinite(now_s):
        raise ValueError(f"now_s must be a finite time [s], got {now_s}")
    return now_s


def _run(
    filters: tuple[SafetyFilter, ...], action: np.ndarray, ctx: FilterContext
) -> tuple[np.ndarray, tuple[Status, ...]]:
    """Apply filters in order until one faults; returns the action and the non-OK statuses."""
    statuses = []
    for safety_filter in filters:
        action, status = safety_filter(action, ctx)
        if status.verdict is not Verdict.OK:
            statuses.append(status)
        if status.verdict is Verdict.FAULT:
            break
    return action, tuple(statuses)
