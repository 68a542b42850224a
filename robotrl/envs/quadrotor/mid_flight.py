"""Changes to an env during a flight, for `fly(on_step=...)`: a payload, a weak rotor, a gust, a moved target.

Each change is a frozen dataclass called as a StepHook with (step, env). It acts on every env of the batch
at the control step that starts at `at_s`, so all episodes of a scenario see the same change at the same
time. Parameter changes go through `env.dynamics.set_params`, which rebuilds the simulator's precomputed
rows; the env's privileged observation shows the new values from then on (a privileged teacher is told,
a student is not).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from robotrl.envs.quadrotor.env import QuadrotorEnv
from robotrl.envs.quadrotor.params import GRAVITY, ROTOR_NAMES


def _step_at(time_s: float, env: QuadrotorEnv) -> int:
    return round(time_s / env.config.dt)


def _check_time(at_s: float) -> None:
    if not (math.isfinite(at_s) and at_s >= 0):
        raise ValueError(f"at_s must be a time >= 0 [s] after the start of the flight, got {at_s}")


@dataclass(frozen=True)
class ScaleMass:
    """Multiply every quadrotor's mass by `factor` (a payload at the centre of mass: inertia unchanged)."""

    at_s: float
    """Time of the change [s]."""
    factor: float = 1.3
    """1.3: 30 % heavier."""

    def __post_init__(self) -> None:
        _check_time(self.at_s)
        if not self.factor > 0:
            raise ValueError(f"mass factor must be > 0, got {self.factor}")

    def __call__(self, step: int, env: QuadrotorEnv) -> None:
        if step == _step_at(self.at_s, env):
            params = env.params
            env.dynamics.set_params(dataclasses.replace(params, mass=params.mass * self.factor))


@dataclass(frozen=True)
class WeakenRotor:
    """One rotor of every quadrotor loses efficiency: its thrust and drag torque scale by `efficiency`."""

    at_s: float
    """Time of the change [s]."""
    rotor: str = "front_right"
    """One of ROTOR_NAMES."""
    efficiency: float = 0.7
    """Factor on the rotor's thrust curve; 0.7: 70 % of the nominal thrust at any command."""

    def __post_init__(self) -> None:
        _check_time(self.at_s)
        if self.rotor not in ROTOR_NAMES:
            raise ValueError(f"rotor '{self.rotor}' is not one of {ROTOR_NAMES}")
        if not (math.isfinite(self.efficiency) and self.efficiency >= 0):
            raise ValueError(f"rotor efficiency must be >= 0, got {self.efficiency}")

    def __call__(self, step: int, env: QuadrotorEnv) -> None:
        if step == _step_at(self.at_s, env):
            params = env.params
            scale = params.rotor_thrust_scale.clone()
            scale[:, ROTOR_NAMES.index(self.rotor)] *= self.efficiency
            env.dynamics.set_params(dataclasses.replace(params, rotor_thrust_scale=scale))


@dataclass(frozen=True)
class Gust:
    """A world-frame push of `weight_fraction` x each quadrotor's weight for `duration_s`, then none.

    The force is added to the env's own disturbance force and taken off again at the end. An env that crashes
    during the gust is reset by the env and carries the opposite force from then on; its episode has ended.
    """

    at_s: float
    """Time the gust starts [s]."""
    duration_s: float = 0.3
    weight_fraction: float = 0.5
    """Force magnitude in units of the quadrotor's weight (mass at the start of the gust)."""
    direction_w: tuple[float, float, float] = (0.0, 1.0, 0.0)
    """World frame, normalised here; the default pushes sideways (+y)."""

    def __post_init__(self) -> None:
        _check_time(self.at_s)
        if not (self.duration_s > 0 and self.weight_fraction >= 0):
            raise ValueError(
                f"gust needs duration_s > 0 and weight_fraction >= 0, got {self.duration_s}, "
                f"{self.weight_fraction}"
            )
        if math.hypot(*self.direction_w) == 0:
            raise ValueError("gust direction_w must not be the zero vector")

    def __call__(self, step: int, env: QuadrotorEnv) -> None:
        start, end = _step_at(self.at_s, env), _step_at(self.at_s + self.duration_s, env)
        if step not in (start, end):
            return
        direction = torch.tensor(self.direction_w, dtype=env.disturbance_force_w.dtype, device=env.device)
        weight = env.params.mass.unsqueeze(-1) * GRAVITY
        force = self.weight_fraction * weight * direction / direction.norm()
        env.disturbance_force_w += force if step == start else -force


@dataclass(frozen=True)
class MoveTarget:
    """Shift the hover target of every env by `offset_w`: a step in the reference (hover targets only)."""

    at_s: float
    """Time of the jump [s]."""
    offset_w: tuple[float, float, float] = (0.5, 0.0, 0.0)
    """World frame [m]."""

    def __post_init__(self) -> None:
        _check_time(self.at_s)

    def __call__(self, step: int, env: QuadrotorEnv) -> None:
        if env.config.target.mode != "hover":
            raise ValueError(
                f"MoveTarget needs target mode 'hover', the env flies '{env.config.target.mode}'"
            )
        if step == _step_at(self.at_s, env):
            offset = torch.tensor(self.offset_w, dtype=env.targets.waypoints.dtype, device=env.device)
            env.targets.waypoints += offset
