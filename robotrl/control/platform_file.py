"""Quadrotor platform files (sim/quadrotor/*.yaml): one reader and one set of checks, numpy only.

Shared by the simulator (robotrl.envs) and by robot-side code (the geometric controller, later the
safety fallback), which must not import torch. Every error names the file, the field and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

PLATFORM_DIR = Path(__file__).resolve().parents[2] / "sim" / "quadrotor"
"""Where named platform files live: sim/quadrotor/<name>.yaml."""

GRAVITY = 9.81
"""Magnitude of gravity [m/s^2], world z up; the simulator and the robot-side code share it."""
DEFAULT_ROTOR_TORQUE_DIRECTIONS = (-1.0, 1.0, -1.0, 1.0)
"""Drag-torque sign of each rotor (FR, BR, BL, FL) about body +z when a platform does not list them:
FR and BL spin counter-clockwise seen from above."""

PHYSICAL_FIELDS: dict[str, tuple[int, ...]] = {
    "mass": (),
    "inertia": (3, 3),
    "rotor_positions": (4, 3),
    "rotor_torque_directions": (4,),
    "thrust_curve": (3,),
    "rotor_torque_constant": (),
    "motor_command_range": (2,),
    "motor_tau_rising": (),
    "motor_tau_falling": (),
}
"""Each physical field and its shape (() for a scalar)."""
FILE_FIELDS = ("name", "description", "sources")
_OPTIONAL = ("description", "rotor_torque_directions")


class PlatformError(ValueError):
    """A platform file or mapping is missing, unreadable or out of range; the message names the field."""


@dataclass(frozen=True)
class _Range:
    lo: float
    hi: float
    unit: str

    def check(self, name: str, value: float, where: str) -> None:
        if not (math.isfinite(value) and self.lo <= value <= self.hi):
            raise PlatformError(
                f"{where}: field '{name}' = {value!r} is outside the allowed range "
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
_ROTOR_QUADRANTS = np.array([[1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])


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


def _array(raw: Mapping[str, Any], name: str, where: str) -> np.ndarray:
    shape = PHYSICAL_FIELDS[name]
    try:
        value = np.array(raw[name], dtype=np.float64)
    except (TypeError, ValueError):
        kind = "a number" if shape == () else f"numbers of shape {shape}"
        raise PlatformError(f"{where}: field '{name}' must be {kind}, got {raw[name]!r}") from None
    if value.shape != shape:
        raise PlatformError(f"{where}: field '{name}' has shape {value.shape}, expected {shape}")
    if not np.isfinite(value).all():
        raise PlatformError(f"{where}: field '{name}' has a non-finite value: {raw[name]!r}")
    return value


def validate_platform(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check the physical fields of a platform; returns them as float64 arrays (scalars as floats)."""
    fields = {"rotor_torque_directions": DEFAULT_ROTOR_TORQUE_DIRECTIONS} | dict(raw)
    missing = [name for name in PHYSICAL_FIELDS if name not in fields]
    if missing:
        raise PlatformError(
            f"{where}: missing field(s) {missing}; every platform needs {list(PHYSICAL_FIELDS)}"
        )
    out: dict[str, Any] = {}
    for name in PHYSICAL_FIELDS:
        value = _array(fields, name, where)
        value.setflags(write=False)
        out[name] = float(value) if value.shape == () else value
    for name, rng in _SCALAR_RANGES.items():
        rng.check(name, out[name], where)

    inertia = out["inertia"]
    if not np.allclose(inertia, inertia.T):
        raise PlatformError(f"{where}: field 'inertia' must be symmetric")
    for i, axis in enumerate("xyz"):
        _INERTIA_DIAG.check(f"inertia[{axis}{axis}]", float(inertia[i, i]), where)
    if np.linalg.eigvalsh(inertia).min() <= 0:
        raise PlatformError(f"{where}: field 'inertia' must be positive definite")

    rotors = out["rotor_positions"]
    for i in range(4):
        _ROTOR_DISTANCE.check(f"rotor_positions[{i}] distance", float(np.linalg.norm(rotors[i, :2])), where)
    if not np.array_equal(np.sign(rotors[:, :2]), _ROTOR_QUADRANTS):
        raise PlatformError(
            f"{where}: field 'rotor_positions' must list rotors front-right (+x,-y), back-right (-x,-y), "
            f"back-left (-x,+y), front-left (+x,+y) in the FLU body frame; got {rotors.tolist()}"
        )
    directions = out["rotor_torque_directions"]
    if not (np.abs(directions) == 1).all() or directions.sum() != 0:
        raise PlatformError(f"{where}: field 'rotor_torque_directions' must hold two +1 and two -1")

    lo, hi = out["motor_command_range"]
    if not lo < hi:
        raise PlatformError(f"{where}: field 'motor_command_range' must be [lo, hi] with lo < hi")
    c0, c1, c2 = out["thrust_curve"]
    thrust = c0 + (c1 + c2 * np.linspace(lo, hi, 9)) * np.linspace(lo, hi, 9)
    if not np.all(np.diff(thrust) > 0):
        raise PlatformError(
            f"{where}: field 'thrust_curve' {out['thrust_curve']} must increase over [{lo}, {hi}]"
        )
    thrust_to_weight = 4.0 * thrust[-1] / (out["mass"] * GRAVITY)
    _THRUST_TO_WEIGHT.check("thrust_curve (thrust-to-weight)", float(thrust_to_weight), where)
    return out


def read_platform(name_or_path: str | Path) -> dict[str, Any]:
    """Read and validate a named platform or a platform file; physical fields as numpy, plus 'name'."""
    path = platform_path(name_or_path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PlatformError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PlatformError(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
    required = [k for k in (*FILE_FIELDS, *PHYSICAL_FIELDS) if k not in _OPTIONAL]
    missing = [k for k in required if k not in raw]
    if missing:
        raise PlatformError(f"{where}: missing field(s) {missing}; every platform needs {required}")
    unknown = sorted(set(raw) - set(FILE_FIELDS) - set(PHYSICAL_FIELDS))
    if unknown:
        raise PlatformError(
            f"{where}: unknown field(s) {unknown}; allowed: {[*FILE_FIELDS, *PHYSICAL_FIELDS]}"
        )
    return validate_platform(raw, where) | {"name": str(raw["name"])}
