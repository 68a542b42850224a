"""Named quadrotor platforms (data files in sim/quadrotor/) and the RAPTOR parameter distribution."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from robotrl.control.platform_file import (
    PHYSICAL_FIELDS,
    PLATFORM_DIR,
    PlatformError,
    available_platforms,
    platform_path,
    read_platform,
)
from robotrl.envs.quadrotor.params import GRAVITY, QuadrotorParams

__all__ = [
    "PLATFORM_DIR",
    "PlatformError",
    "RaptorDistribution",
    "available_platforms",
    "load_platform",
    "platform_path",
]


def load_platform(name_or_path: str | Path) -> QuadrotorParams:
    """Read and validate one platform (robotrl.control.platform_file) into a batch of one quadrotor."""
    fields = read_platform(name_or_path)

    def tensor(name: str) -> torch.Tensor:
        return torch.tensor(fields[name], dtype=torch.float32).unsqueeze(0)  # copies the read-only array

    return QuadrotorParams(**{name: tensor(name) for name in PHYSICAL_FIELDS})


@dataclass(frozen=True)
class RaptorDistribution:
    """The distribution of quadrotors RAPTOR's teachers were trained on (ANCHORS §1).

    Everything is derived from a base platform (the Crazyflie): mass is sampled uniformly in
    cube-root space, the size (rotor arm) scales with cbrt(mass ratio), the thrust curve is scaled to
    the sampled thrust-to-weight, and the roll/pitch inertia follows from the sampled ratio of the
    maximum single-rotor torque to inertia, keeping the base platform's yaw/roll inertia ratio.
    """

    thrust_to_weight: tuple[float, float] = (1.5, 5.0)
    mass: tuple[float, float] = (0.02, 5.0)
    torque_to_inertia: tuple[float, float] = (40.0, 1200.0)
    motor_tau_rising: tuple[float, float] = (0.03, 0.10)
    motor_tau_falling: tuple[float, float] = (0.03, 0.30)
    rotor_torque_constant: tuple[float, float] = (0.005, 0.05)
    base_platform: str = "crazyflie"

    def sample(self, num: int, generator: torch.Generator) -> QuadrotorParams:
        base = load_platform(self.base_platform)

        def uniform(bounds: tuple[float, float]) -> torch.Tensor:
            return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(num, generator=generator)

        cbrt_lo, cbrt_hi = (m ** (1.0 / 3.0) for m in self.mass)
        mass = uniform((cbrt_lo, cbrt_hi)) ** 3
        thrust_to_weight = uniform(self.thrust_to_weight)
        scale = (mass / base.mass) ** (1.0 / 3.0)
        rotor_positions = base.rotor_positions * scale.view(-1, 1, 1)
        # Scale the whole thrust curve so that full command gives the sampled thrust-to-weight.
        thrust_scale = thrust_to_weight / base.thrust_to_weight * mass / base.mass
        thrust_curve = base.thrust_curve * thrust_scale[:, None]
        max_thrust = thrust_to_weight * mass * GRAVITY / 4.0
        arm = rotor_positions[:, 0, :2].norm(dim=-1)
        j_xx = max_thrust * arm / uniform(self.torque_to_inertia)
        base_inertia = base.inertia[0]
        ratios = torch.diagonal(base_inertia) / base_inertia[0, 0]
        inertia = torch.diag_embed(j_xx[:, None] * ratios)
        return QuadrotorParams(
            mass=mass,
            inertia=inertia,
            rotor_positions=rotor_positions,
            rotor_torque_directions=base.rotor_torque_directions.expand(num, 4).clone(),
            thrust_curve=thrust_curve,
            rotor_torque_constant=uniform(self.rotor_torque_constant),
            motor_command_range=base.motor_command_range.expand(num, 2).clone(),
            motor_tau_rising=uniform(self.motor_tau_rising),
            motor_tau_falling=uniform(self.motor_tau_falling),
        )
