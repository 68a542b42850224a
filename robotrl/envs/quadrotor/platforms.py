"""Named quadrotor platforms (data files in sim/quadrotor/) and the RAPTOR parameter distribution."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from robotrl.envs.quadrotor.params import GRAVITY, ROTOR_TORQUE_DIRECTIONS, QuadrotorParams

PLATFORM_DIR = Path(__file__).resolve().parents[3] / "sim" / "quadrotor"
"""Where named platform files live: sim/quadrotor/<name>.yaml."""


class PlatformError(ValueError):
    """A platform file is missing, unreadable or out of range; the message names the field."""


@dataclass(frozen=True)
class _Range:
    lo: float
    hi: float
    unit: str

    def check(self, name: str, value: float, path: Path) -> None:
        if not (math.isfinite(value) and self.lo <= value <= self.hi):
            raise PlatformError(
                f"{path}: field '{name}' = {value!r} is outside the allowed range "
                f"[{self.lo}, {self.hi}] {self.unit}; fix the value in the file"
            )


_SCALAR_RANGES = {
    "mass": _Range(0.005, 50.0, "kg"),
    "rotor_torque_constant": _Range(0.0, 0.2, "m"),
    "motor_tau_rising": _Range(0.001, 1.0, "s"),
    "motor_tau_falling": _Range(0.001, 1.0, "s"),
}
_INERTIA_DIAG = _Range(1e-7, 10.0, "kg m^2")
_ROTOR_DISTANCE = _Range(0.01, 2.0, "m")
_THRUST_TO_WEIGHT = _Range(1.05, 20.0, "(max thrust / weight; a quadrotor must be able to hover)")
_REQUIRED = (
    "name", "mass", "inertia", "rotor_positions", "thrust_curve", "rotor_torque_constant",
    "motor_command_range", "motor_tau_rising", "motor_tau_falling", "sources",
)  # fmt: skip


def available_platforms() -> list[str]:
    return sorted(p.stem for p in PLATFORM_DIR.glob("*.yaml"))


def platform_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise PlatformError(f"platform file {path} does not exist")
        return path
    path = PLATFORM_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise PlatformError(
            f"unknown platform '{name_or_path}'; available: {', '.join(available_platforms())} "
            f"(or give the path of a platform .yaml file)"
        )
    return path


def _vector(raw: dict[str, Any], name: str, shape: tuple[int, ...], path: Path) -> torch.Tensor:
    try:
        value = torch.tensor(raw[name], dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise PlatformError(f"{path}: field '{name}' must be numbers of shape {shape}: {exc}") from None
    if value.shape != shape:
        raise PlatformError(f"{path}: field '{name}' has shape {tuple(value.shape)}, expected {shape}")
    if not torch.isfinite(value).all():
        raise PlatformError(f"{path}: field '{name}' has a non-finite value: {raw[name]}")
    return value


def load_platform(name_or_path: str | Path) -> QuadrotorParams:
    """Read and validate one platform file into a batch of one quadrotor."""
    path = platform_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PlatformError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PlatformError(f"{path}: expected a mapping of fields, got {type(raw).__name__}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise PlatformError(f"{path}: missing field(s) {missing}; every platform needs {list(_REQUIRED)}")
    unknown = sorted(set(raw) - set(_REQUIRED) - {"description", "rotor_torque_directions"})
    if unknown:
        raise PlatformError(f"{path}: unknown field(s) {unknown}; allowed: {list(_REQUIRED)}")
    for name, rng in _SCALAR_RANGES.items():
        try:
            value = float(raw[name])
        except (TypeError, ValueError):
            raise PlatformError(f"{path}: field '{name}' must be a number, got {raw[name]!r}") from None
        rng.check(name, value, path)

    inertia = _vector(raw, "inertia", (3, 3), path)
    if not torch.allclose(inertia, inertia.T):
        raise PlatformError(f"{path}: field 'inertia' must be symmetric")
    for i, axis in enumerate("xyz"):
        _INERTIA_DIAG.check(f"inertia[{axis}{axis}]", float(inertia[i, i]), path)
    if torch.linalg.eigvalsh(inertia.double()).min() <= 0:
        raise PlatformError(f"{path}: field 'inertia' must be positive definite")
    rotors = _vector(raw, "rotor_positions", (4, 3), path)
    for i in range(4):
        _ROTOR_DISTANCE.check(f"rotor_positions[{i}] distance", float(rotors[i, :2].norm()), path)
    signs = torch.sign(rotors[:, :2])
    if not torch.equal(signs, torch.tensor([[1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])):
        raise PlatformError(
            f"{path}: field 'rotor_positions' must list rotors front-right (+x,-y), back-right (-x,-y), "
            f"back-left (-x,+y), front-left (+x,+y) in the FLU body frame; got {rotors.tolist()}"
        )
    directions = (
        _vector(raw, "rotor_torque_directions", (4,), path)
        if "rotor_torque_directions" in raw
        else torch.tensor(ROTOR_TORQUE_DIRECTIONS)
    )
    if not (directions.abs() == 1).all() or directions.sum() != 0:
        raise PlatformError(f"{path}: field 'rotor_torque_directions' must hold two +1 and two -1")
    command_range = _vector(raw, "motor_command_range", (2,), path)
    if not command_range[0] < command_range[1]:
        raise PlatformError(f"{path}: field 'motor_command_range' must be [lo, hi] with lo < hi")

    params = QuadrotorParams(
        mass=torch.tensor([float(raw["mass"])]),
        inertia=inertia.unsqueeze(0),
        rotor_positions=rotors.unsqueeze(0),
        rotor_torque_directions=directions.unsqueeze(0),
        thrust_curve=_vector(raw, "thrust_curve", (3,), path).unsqueeze(0),
        rotor_torque_constant=torch.tensor([float(raw["rotor_torque_constant"])]),
        motor_command_range=command_range.unsqueeze(0),
        motor_tau_rising=torch.tensor([float(raw["motor_tau_rising"])]),
        motor_tau_falling=torch.tensor([float(raw["motor_tau_falling"])]),
    )
    _THRUST_TO_WEIGHT.check("thrust_curve (thrust-to-weight)", float(params.thrust_to_weight[0]), path)
    return params


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
