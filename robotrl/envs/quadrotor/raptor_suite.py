"""RAPTOR's evaluation suite: fleets of held-out and named quadrotors, six flights, per-episode metrics.

Every quadrotor of a fleet flies K random starts in one batched env (row q*K + k is quadrotor q), so one
flight per controller and scenario covers the whole fleet. Metrics are per episode, [Q*K], with one
convention: NaN means the episode does not count for that metric (it was not at the target when the change
came), inf means it counts and failed (crashed, never settled). Fractions average the counted episodes;
times and errors take their median, so a controller that crashes in most episodes gets an infinite median
error rather than the error of its few survivors.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from robotrl.envs.quadrotor.env import QuadrotorEnvConfig
from robotrl.envs.quadrotor.evaluation import Controller, FlightLog, StepHook, fly, last_step_outside
from robotrl.envs.quadrotor.mid_flight import Gust, MoveTarget, ScaleMass, WeakenRotor
from robotrl.envs.quadrotor.params import QuadrotorParams
from robotrl.envs.quadrotor.platforms import RaptorDistribution, load_platform
from robotrl.envs.quadrotor.targets import TargetConfig, TargetMode

HELD_OUT_SEED = 1
"""Seed of the held-out quadrotors; RAPTOR's teachers (and ours) are sampled with seed 0."""
NAMED_PLATFORMS = ("crazyflie", "fpv5", "x500")
"""27 g to 2.06 kg: the lightest and the heaviest named platform and one in between."""
TRAINING_GROUP = "training"
"""Report group of the training quadrotors whose teacher was kept."""
FRACTIONS = frozenset({"success", "eligible", "recovered_in_time"})
"""Per-episode 0/1 metrics, averaged; every other metric is summarised by its median."""


# ------------------------------------------------------------------------------------------ fleets
@dataclass(frozen=True)
class Fleet:
    """Quadrotors flown together in one env, each with a label and the report group it belongs to."""

    name: str
    params: QuadrotorParams
    """One row per quadrotor, [Q]."""
    labels: tuple[str, ...]
    groups: tuple[str, ...]
    """Report group of each quadrotor: one summary table per group."""

    def __post_init__(self) -> None:
        q = self.params.num_envs
        if len(self.labels) != q or len(self.groups) != q:
            raise ValueError(
                f"fleet '{self.name}': {q} quadrotors, {len(self.labels)} labels, {len(self.groups)} groups; "
                "give one label and one group per quadrotor"
            )

    @property
    def num_quadrotors(self) -> int:
        return self.params.num_envs

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.groups))

    def members(self, group: str) -> np.ndarray:
        """Indices of the quadrotors of `group`."""
        return np.flatnonzero(np.array(self.groups) == group)

    @staticmethod
    def cat(name: str, parts: list[Fleet]) -> Fleet:
        return Fleet(
            name,
            QuadrotorParams.cat([p.params for p in parts]),
            tuple(label for p in parts for label in p.labels),
            tuple(group for p in parts for group in p.groups),
        )


def held_out_fleet(num: int, seed: int = HELD_OUT_SEED) -> Fleet:
    """`num` quadrotors from RAPTOR's distribution, drawn with a seed training never uses."""
    if seed == 0:
        raise ValueError("seed 0 draws the training quadrotors; a held-out fleet needs another seed")
    params = RaptorDistribution().sample(num, torch.Generator().manual_seed(seed))
    return Fleet("held_out", params, tuple(f"held_out/{i:03d}" for i in range(num)), ("held_out",) * num)


def named_fleet(names: tuple[str, ...] = NAMED_PLATFORMS) -> Fleet:
    """The named platforms of sim/quadrotor/, each its own report group."""
    params = QuadrotorParams.cat([load_platform(name) for name in names])
    return Fleet("named", params, names, names)


def training_fleet(params: QuadrotorParams, kept: torch.Tensor) -> Fleet:
    """A run's training quadrotors; those whose teacher was dropped are reported apart."""
    groups = tuple(TRAINING_GROUP if k else f"{TRAINING_GROUP}_not_kept" for k in kept.tolist())
    return Fleet("training", params, tuple(f"train/{i:04d}" for i in range(params.num_envs)), groups)


# ------------------------------------------------------------------------------------------ scenarios
@dataclass(frozen=True)
class SuiteConfig:
    """Durations, thresholds and changes of the suite; every time is from the start of a flight [s]."""

    episodes_per_quadrotor: int = 8
    """K random starts per quadrotor (InitConfig defaults: 0.5 m, 30 deg, 0.5 m/s, 1 rad/s)."""
    seed: int = 12345
    """Seed of the random starts: every controller flies the same ones."""
    dt: float = 0.01
    within_m: float = 0.1
    """'At the target': the bound for settling, for counting an episode and for recovery [m]."""
    rmse_window_s: float = 5.0
    """Hover and figure-8 RMSE over the last this many seconds."""
    hover_s: float = 10.0
    """Length of the hover flight [s]."""
    figure8_s: float = 10.0
    """Length of the figure-8 flight (TargetConfig defaults: 1 m half-width, 6 s a lap) [s]."""
    step_at_s: float = 3.0
    """The hover target jumps at this time: the random start has settled, a recurrent policy has adapted."""
    step_s: float = 8.0
    """Length of the step flight [s]."""
    step_m: float = 0.5
    """Size of the target jump, along world x [m]."""
    change_at_s: float = 5.0
    """Adaptation: the mass, a rotor or a gust changes at this time, during a hover."""
    adaptation_s: float = 10.0
    """Length of each adaptation flight [s]."""
    recovery_deadline_s: float = 1.0
    """'Recovered' means back within within_m for good no later than this after the change [s]."""
    mass_factor: float = 1.3
    """Payload: mass x1.3 (thrust-to-weight 1.5 becomes 1.15, still able to hover)."""
    rotor: str = "front_right"
    rotor_efficiency: float = 0.7
    """The rotor's thrust (and drag torque) falls to 70 %: 7.5 % less lift, a roll, pitch and yaw torque."""
    gust_s: float = 0.3
    gust_weight_fraction: float = 0.5
    """Gust force along world +y in units of the quadrotor's weight: uncountered, 0.5 g for 0.3 s is
    1.5 m/s and 0.22 m of drift, yet a quadrotor with thrust-to-weight 1.5 can push back and keep its
    height (it needs 1.12 x weight)."""

    def __post_init__(self) -> None:
        if self.episodes_per_quadrotor < 1:
            raise ValueError(f"episodes_per_quadrotor must be >= 1, got {self.episodes_per_quadrotor}")
        for flight, duration in (("hover_s", self.hover_s), ("figure8_s", self.figure8_s)):
            if self.rmse_window_s > duration:
                raise ValueError(f"rmse_window_s {self.rmse_window_s} is longer than {flight} {duration}")
        for at, at_s, end, end_s in (
            ("step_at_s", self.step_at_s, "step_s", self.step_s),
            ("change_at_s", self.change_at_s, "adaptation_s", self.adaptation_s),
        ):
            if not self.dt <= at_s < end_s:
                raise ValueError(f"need dt <= {at} < {end}, got {at} = {at_s}, {end} = {end_s}")


@dataclass(frozen=True)
class Scenario:
    """One flight of the suite: how long, which target, what changes mid-flight, how it is scored."""

    name: str
    title: str
    duration_s: float
    target_mode: TargetMode
    score: Callable[[FlightLog], dict[str, np.ndarray]]
    change: StepHook | None = None
    event_s: float | None = None
    """Time of the jump or change; the error around it is kept for plots."""


def scenarios(config: SuiteConfig) -> tuple[Scenario, ...]:
    """hover, step, figure8 and one adaptation flight per change, in report order."""
    c = config
    recovery = functools.partial(
        recovery_metrics, at_s=c.change_at_s, within_m=c.within_m, deadline_s=c.recovery_deadline_s
    )
    changes: tuple[tuple[str, str, StepHook], ...] = (
        ("adapt_mass", f"mass x{c.mass_factor:g}", ScaleMass(c.change_at_s, c.mass_factor)),
        (
            "adapt_rotor",
            f"{c.rotor} rotor at {c.rotor_efficiency:.0%}",
            WeakenRotor(c.change_at_s, c.rotor, c.rotor_efficiency),
        ),
        (
            "adapt_gust",
            f"gust {c.gust_weight_fraction:g} x weight for {c.gust_s:g} s",
            Gust(c.change_at_s, c.gust_s, c.gust_weight_fraction),
        ),
    )
    tracking = functools.partial(tracking_metrics, window_s=c.rmse_window_s)
    return (
        Scenario("hover", "hover", c.hover_s, "hover", tracking),
        Scenario(
            "step",
            f"step {c.step_m:g} m in x",
            c.step_s,
            "hover",
            functools.partial(step_response_metrics, at_s=c.step_at_s, within_m=c.within_m),
            MoveTarget(c.step_at_s, (c.step_m, 0.0, 0.0)),
            c.step_at_s,
        ),
        Scenario("figure8", "figure-8", c.figure8_s, "figure8", tracking),
        *(
            Scenario(name, title, c.adaptation_s, "hover", recovery, change, c.change_at_s)
            for name, title, change in changes
        ),
    )


@dataclass
class ScenarioResult:
    episodes: dict[str, np.ndarray]
    """Metric name -> [Q*K] per episode (quadrotor-major), NaN: does not count, inf: failed."""
    trace_t: np.ndarray | None = None
    """[W] time since the scenario's event [s], from 1 s before it to the end."""
    trace_m: np.ndarray | None = None
    """[W, Q*K] distance to the target [m]; NaN for episodes that do not count (and after a crash)."""


def run_scenario(
    controller: Controller, fleet: Fleet, scenario: Scenario, config: SuiteConfig
) -> ScenarioResult:
    """Fly all of the fleet's quadrotors x K starts in one env and score every episode."""
    k = config.episodes_per_quadrotor
    params = fleet.params.repeat_each(k)
    env_config = QuadrotorEnvConfig(
        num_envs=params.num_envs,
        dt=config.dt,
        seed=config.seed,
        target=TargetConfig(mode=scenario.target_mode),
        initial_previous_action="zero",  # as RAPTOR was trained and the robot flies: no hover command given
    )
    log = fly(controller, env_config, scenario.duration_s, params=params, on_step=scenario.change)
    episodes = scenario.score(log)
    if scenario.event_s is None:
        return ScenarioResult(episodes)
    first = max(round((scenario.event_s - 1.0) / config.dt), 0)
    trace = np.where(episodes["eligible"] > 0, log.position_error_m[first:], np.nan)
    return ScenarioResult(episodes, log.time_s[first:] - scenario.event_s, trace)


@dataclass(frozen=True)
class Flight:
    """One controller flown through one scenario on one fleet."""

    fleet: Fleet
    controller: str
    scenario: Scenario
    result: ScenarioResult

    def per_quadrotor(self) -> dict[str, np.ndarray]:
        """Metric -> [Q] summary over each quadrotor's episodes."""
        q = self.fleet.num_quadrotors
        return {name: aggregate(name, v.reshape(q, -1)) for name, v in self.result.episodes.items()}

    def summary(self) -> dict[str, dict[str, float]]:
        """Report group -> metric -> summary over all episodes of the group's quadrotors."""
        q = self.fleet.num_quadrotors
        return {
            group: {
                name: float(aggregate(name, v.reshape(q, -1)[self.fleet.members(group)].ravel()))
                for name, v in self.result.episodes.items()
            }
            for group in self.fleet.group_names
        }


# ------------------------------------------------------------------------------------------ metrics
def tracking_metrics(log: FlightLog, window_s: float) -> dict[str, np.ndarray]:
    """success: no crash in the flight; rmse_m: position RMSE over the last window_s (inf if crashed)."""
    crashed = log.crashed_at >= 0
    window = log.time_s > log.time_s[-1] - window_s
    with np.errstate(invalid="ignore"):
        rmse = np.sqrt(np.mean(log.position_error_m[window] ** 2, axis=0))
    return {"success": (~crashed).astype(np.float64), "rmse_m": np.where(crashed, np.inf, rmse)}


def _event_step(log: FlightLog, at_s: float) -> int:
    """Index of the first sample after a change made at at_s (sample i is the state after step i)."""
    step = round(at_s / log.dt)
    if not 1 <= step < log.position_w.shape[0]:
        raise ValueError(
            f"event at {at_s} s is outside the flight's samples (dt {log.dt}, {len(log.time_s)})"
        )
    return step


def _settle_time(error_after: np.ndarray, within_m: float, dt: float) -> np.ndarray:
    """[N] time from the event to its last sample outside within_m: 0 if none, inf if still out at the end."""
    last = last_step_outside(error_after, within_m)
    return np.where(last == error_after.shape[0] - 1, np.inf, np.where(last < 0, 0.0, (last + 1) * dt))


def _crossing_time(progress: np.ndarray, time_s: np.ndarray, level: float) -> np.ndarray:
    """[N] first time progress [W, N] reaches level, linearly interpolated between samples; inf if never."""
    above = progress >= level
    hit = above.any(axis=0)
    k = np.argmax(above, axis=0)
    cols = np.arange(progress.shape[1])
    k0 = np.maximum(k - 1, 0)
    p0, p1 = progress[k0, cols], progress[k, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(k > 0, (level - p0) / (p1 - p0), 0.0)
    return np.where(hit, time_s[k0] + frac * (time_s[k] - time_s[k0]), np.inf)


def _counted_before(log: FlightLog, step: int, within_m: float) -> np.ndarray:
    """[N] within within_m of the target at the change, not crashed before: the episodes that count."""
    return log.position_error_m[step - 1] <= within_m


def step_response_metrics(log: FlightLog, at_s: float, within_m: float) -> dict[str, np.ndarray]:
    """Rise time (10 -> 90 %), overshoot [%] and settle time to within_m after the target jumped at at_s.

    Progress runs from the position at the jump (0) to the new target (1) along the jump's direction; only
    episodes within within_m of the old target at the jump count.
    """
    j = _event_step(log, at_s)
    counted = _counted_before(log, j, within_m)
    jump = log.target_position_w[j] - log.target_position_w[j - 1]
    direction = jump / np.linalg.norm(jump, axis=-1, keepdims=True).clip(min=1e-9)
    position = log.flown_position_w[j - 1 :]  # from the sample at the jump on
    start = position[0]
    span = np.einsum("nk,nk->n", log.target_position_w[j] - start, direction)
    with np.errstate(invalid="ignore", divide="ignore"):
        progress = np.einsum("tnk,nk->tn", position - start, direction) / span
    time_s = log.time_s[j - 1 :] - at_s
    crashed = log.crashed_at >= 0
    with np.errstate(invalid="ignore"):  # inf - inf where 10 % was never reached either
        rise = _crossing_time(progress, time_s, 0.9) - _crossing_time(progress, time_s, 0.1)
    rise = np.where(np.isnan(rise), np.inf, rise)
    overshoot = 100.0 * np.clip(np.max(np.nan_to_num(progress, nan=-np.inf), axis=0) - 1.0, 0.0, None)
    settle = _settle_time(log.position_error_m[j:], within_m, log.dt)

    def counted_only(values: np.ndarray) -> np.ndarray:
        return np.where(counted, np.where(crashed, np.inf, values), np.nan)

    return {
        "success": (~crashed).astype(np.float64),
        "eligible": counted.astype(np.float64),
        "rise_s": counted_only(rise),
        "overshoot_pct": counted_only(overshoot),
        "settle_s": counted_only(settle),
    }


def recovery_metrics(
    log: FlightLog, at_s: float, within_m: float, deadline_s: float
) -> dict[str, np.ndarray]:
    """Time to be back within within_m for good after a change at at_s, and whether that took <= deadline_s.

    Only episodes within within_m of the target at the change count; a crash after it never recovers.
    """
    j = _event_step(log, at_s)
    counted = _counted_before(log, j, within_m)
    after = log.position_error_m[j:]
    recovery = _settle_time(after, within_m, log.dt)
    peak = np.where(np.isnan(after).any(axis=0), np.inf, np.max(np.nan_to_num(after), axis=0))
    return {
        "success": (log.crashed_at < 0).astype(np.float64),
        "eligible": counted.astype(np.float64),
        "recovery_s": np.where(counted, recovery, np.nan),
        "recovered_in_time": np.where(counted, (recovery <= deadline_s).astype(np.float64), np.nan),
        "peak_error_m": np.where(counted, peak, np.nan),
    }


def aggregate(metric: str, values: np.ndarray) -> np.ndarray:
    """Summary over the last axis, ignoring NaN (episodes that do not count): mean of a fraction, else median.

    NaN where no episode counts.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        return np.nanmean(values, axis=-1) if metric in FRACTIONS else np.nanmedian(values, axis=-1)
