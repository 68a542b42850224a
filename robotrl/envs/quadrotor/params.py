"""Physical parameters of a batch of quadrotors, one row per env.

Conventions (ANCHORS §1, the simulator RAPTOR was trained in): body frame FLU, world frame z-up,
rotor order front-right, back-right, back-left, front-left, each rotor thrusting along body +z.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from robotrl.control.platform_file import GRAVITY  # the world acceleration is (0, 0, -GRAVITY)

ROTOR_NAMES = ("front_right", "back_right", "back_left", "front_left")
"""Motor order of every action, state and parameter in robotrl."""


@dataclass
class QuadrotorParams:
    """Batched parameters; every tensor has a leading [num_envs] dimension."""

    mass: torch.Tensor
    """[N] total mass [kg]."""
    inertia: torch.Tensor
    """[N, 3, 3] inertia about the centre of mass, body frame [kg m^2]."""
    rotor_positions: torch.Tensor
    """[N, 4, 3] rotor hub positions in the body frame [m], ROTOR_NAMES order."""
    rotor_torque_directions: torch.Tensor
    """[N, 4] +-1, sign of each rotor's drag torque about body +z."""
    thrust_curve: torch.Tensor
    """[N, 3] (c0, c1, c2): thrust per rotor f = c0 + c1 u + c2 u^2 [N] for motor command u."""
    rotor_torque_constant: torch.Tensor
    """[N] drag torque per unit thrust [m]: tau_z = k * f."""
    motor_command_range: torch.Tensor
    """[N, 2] (lo, hi): action -1 maps to lo, +1 to hi (normalised motor command)."""
    motor_tau_rising: torch.Tensor
    """[N] first-order motor time constant when speeding up [s]."""
    motor_tau_falling: torch.Tensor
    """[N] first-order motor time constant when slowing down [s]."""
    rotor_thrust_scale: torch.Tensor = None  # type: ignore[assignment]  # None: all ones, see __post_init__
    """[N, 4] efficiency of each rotor: multiplies its thrust, and so its drag torque (1 nominal; a worn
    or damaged rotor < 1). Not part of a platform file: it models a fault, so it defaults to all ones."""

    def __post_init__(self) -> None:
        expected = (self.num_envs, 4)
        if self.rotor_thrust_scale is None:
            self.rotor_thrust_scale = torch.ones(expected, dtype=self.mass.dtype, device=self.device)
        elif tuple(self.rotor_thrust_scale.shape) != expected:
            raise ValueError(
                f"rotor_thrust_scale must have shape {expected} (one factor per env and rotor, "
                f"{', '.join(ROTOR_NAMES)}), got {tuple(self.rotor_thrust_scale.shape)}"
            )

    @property
    def num_envs(self) -> int:
        return self.mass.shape[0]

    @property
    def device(self) -> torch.device:
        return self.mass.device

    @property
    def inertia_inv(self) -> torch.Tensor:
        return torch.linalg.inv(self.inertia)

    @property
    def max_thrust_per_rotor(self) -> torch.Tensor:
        """[N] thrust of one nominal rotor (efficiency 1) at the top of the command range [N]."""
        return self.rotor_thrust(self.motor_command_range[:, 1:2])[:, 0]

    @property
    def thrust_to_weight(self) -> torch.Tensor:
        """[N] full thrust of the four rotors, each at its efficiency, over the weight."""
        total = self.max_thrust_per_rotor * self.rotor_thrust_scale.sum(-1)
        return total / (self.mass * GRAVITY)

    @property
    def arm_length(self) -> torch.Tensor:
        """[N] the first rotor's distance from the z axis [m]; every rotor's, the frames being symmetric."""
        return self.rotor_positions[:, 0, :2].norm(dim=-1)

    @property
    def roll_authority(self) -> torch.Tensor:
        """[N] one nominal rotor's full thrust times the arm over the roll inertia [rad/s^2]: how fast the
        quadrotor can tilt, RAPTOR's torque-to-inertia ratio (RaptorDistribution draws it). The distilled
        student's hover crashes sit on the lowest (README, RAPTOR)."""
        return self.max_thrust_per_rotor * self.arm_length / self.inertia[:, 0, 0]

    def rotor_thrust(self, motor_command: torch.Tensor) -> torch.Tensor:
        """Thrust [N] of a nominal rotor (efficiency 1), [N, ...], for normalised motor commands [N, ...]."""
        c = self.thrust_curve
        u = motor_command
        return c[:, 0:1] + (c[:, 1:2] + c[:, 2:3] * u) * u

    def hover_command(self) -> torch.Tensor:
        """[N] motor command at which four nominal rotors carry the weight (root of the thrust curve)."""
        return self._command_for_thrust(self.mass * GRAVITY / 4.0)

    def rotor_hover_action(self) -> torch.Tensor:
        """[N, 4] action at which each rotor, at its efficiency, carries a quarter of the weight: a weak
        rotor's share of a level hover (clipped to [-1, 1]; all equal to hover_action when nominal)."""
        f = (self.mass * GRAVITY / 4.0).unsqueeze(-1) / self.rotor_thrust_scale.clamp_min(1e-6)
        return self._command_to_action(self._command_for_thrust(f)).clamp(-1.0, 1.0)

    def _command_for_thrust(self, f: torch.Tensor) -> torch.Tensor:
        """Command [N, ...] at which a nominal rotor gives thrust f [N, ...] (root of the thrust curve)."""
        c0, c1, c2 = (c.reshape(-1, *[1] * (f.dim() - 1)) for c in self.thrust_curve.unbind(-1))
        disc = (c1 * c1 - 4.0 * c2 * (c0 - f)).clamp_min(0.0)
        quadratic = (-c1 + torch.sqrt(disc)) / (2.0 * c2.clamp_min(1e-12))
        linear = (f - c0) / c1.clamp_min(1e-12)
        return torch.where(c2 > 1e-12, quadratic, linear)

    def hover_action(self) -> torch.Tensor:
        """[N] action in [-1, 1] that commands the hover motor command."""
        return self._command_to_action(self.hover_command())

    def _command_to_action(self, command: torch.Tensor) -> torch.Tensor:
        """Actions for motor commands [N, ...]: the env maps [-1, 1] linearly onto the command range."""
        lo, hi = (b.reshape(-1, *[1] * (command.dim() - 1)) for b in self.motor_command_range.unbind(-1))
        return 2.0 * (command - lo) / (hi - lo) - 1.0

    def to(self, device: torch.device | str) -> QuadrotorParams:
        return QuadrotorParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def index(self, env_ids: torch.Tensor | slice) -> QuadrotorParams:
        return QuadrotorParams(**{f.name: getattr(self, f.name)[env_ids] for f in fields(self)})

    def assign(self, env_ids: torch.Tensor, other: QuadrotorParams) -> None:
        """Overwrite the rows env_ids with the rows of `other` (same length as env_ids)."""
        for f in fields(self):
            getattr(self, f.name)[env_ids] = getattr(other, f.name)

    @staticmethod
    def cat(parts: list[QuadrotorParams]) -> QuadrotorParams:
        return QuadrotorParams(
            **{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(QuadrotorParams)}
        )

    def repeat_each(self, times: int) -> QuadrotorParams:
        """Each quadrotor `times` times, quadrotor-major: row q * times + k is quadrotor q."""
        return self.index(torch.arange(self.num_envs, device=self.device).repeat_interleave(times))

    def repeat(self, num_envs: int) -> QuadrotorParams:
        """A batch of num_envs copies of a single quadrotor (self must have one row)."""
        if self.num_envs != 1:
            raise ValueError(f"repeat() needs a single quadrotor, got a batch of {self.num_envs}")
        return QuadrotorParams(
            **{
                f.name: getattr(self, f.name).expand(num_envs, *getattr(self, f.name).shape[1:]).clone()
                for f in fields(self)
            }
        )
