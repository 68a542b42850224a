"""Geometric SE(3) position controller for quadrotors (Lee, Leok, McClamroch 2010), numpy only.

It is the classical baseline every learned policy is scored against, and later the safety fallback
on the robot, so it imports neither torch nor robotrl.envs: it reads the same platform YAML files and
the same 22-value observation as a policy (position error, body-to-world rotation row-major, velocity
error, body rates, previous action; motor order FR, BR, BL, FL), and returns the same actions in
[-1, 1], through the same `reset(batch_size)` / `act(obs)` interface as a policy runner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.control.platform_file import GRAVITY, PHYSICAL_FIELDS, read_platform, validate_platform

OBSERVATION_DIM = 22
_POS = slice(0, 3)
_ROT = slice(3, 12)
_VEL = slice(12, 15)
_OMEGA = slice(15, 18)
_PREV_ACTION = slice(18, 22)


@dataclass(frozen=True)
class NominalQuadrotor:
    """The parameters the controller believes in; the real vehicle may differ (that is the point).

    Fields are stored as read-only float64 arrays (scalars as floats) and checked on construction, so
    a controller never starts from a half-valid model.
    """

    mass: float
    """[kg]"""
    inertia: np.ndarray
    """[3, 3] about the centre of mass, body FLU [kg m^2]."""
    rotor_positions: np.ndarray
    """[4, 3] body FLU [m], order FR, BR, BL, FL."""
    rotor_torque_directions: np.ndarray
    """[4] +-1, drag-torque sign about body +z."""
    thrust_curve: np.ndarray
    """[3] (c0, c1, c2): thrust per rotor f = c0 + c1 u + c2 u^2 [N]."""
    rotor_torque_constant: float
    """Drag torque per newton of thrust [m]."""
    motor_command_range: np.ndarray
    """[2] (lo, hi): action -1 maps to lo, +1 to hi."""
    motor_tau_rising: float
    """First-order motor time constant when speeding up [s]."""
    motor_tau_falling: float
    """First-order motor time constant when slowing down [s]."""

    def __post_init__(self) -> None:
        fields = validate_platform(
            {name: getattr(self, name) for name in PHYSICAL_FIELDS}, "NominalQuadrotor"
        )
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @staticmethod
    def from_platform_yaml(source: str | Path | Mapping[str, Any]) -> NominalQuadrotor:
        """A platform by name, file (sim/quadrotor/*.yaml) or parsed mapping, read without robotrl.envs."""
        fields = (
            validate_platform(source, "platform mapping")
            if isinstance(source, Mapping)
            else read_platform(source)
        )
        return NominalQuadrotor(**{name: fields[name] for name in PHYSICAL_FIELDS})

    def rotor_thrust(self, command: np.ndarray) -> np.ndarray:
        c0, c1, c2 = self.thrust_curve
        return c0 + (c1 + c2 * command) * command

    def motor_command(self, thrust: np.ndarray) -> np.ndarray:
        """Inverse of the thrust curve (its increasing branch), clipped to the command range."""
        c0, c1, c2 = self.thrust_curve
        if abs(c2) > 1e-12:
            disc = np.maximum(c1 * c1 - 4.0 * c2 * (c0 - thrust), 0.0)
            command = (-c1 + np.sqrt(disc)) / (2.0 * c2)
        else:
            command = (thrust - c0) / c1
        return np.clip(command, *self.motor_command_range)

    def mixer(self) -> np.ndarray:
        """[4, 4] rotor thrusts -> (total thrust, tau_x, tau_y, tau_z), summed as the simulator does."""
        r = self.rotor_positions
        return np.stack(
            (np.ones(4), r[:, 1], -r[:, 0], self.rotor_torque_constant * self.rotor_torque_directions)
        )


@dataclass(frozen=True)
class GeometricGains:
    """Gains as natural frequencies [rad/s] and damping ratios, scaled by mass and inertia inside.

    A gain set therefore carries over between a 30 g and a 2 kg quadrotor. The defaults keep the attitude
    loop 6x faster than the position loop; they were chosen on the Crazyflie and on platforms sampled from
    RAPTOR's distribution at 100 Hz, where a 20 rad/s attitude loop crashed more of the slow-motor ones.
    """

    position_frequency: float = 2.5
    position_damping: float = 0.9
    attitude_frequency: float = 15.0
    attitude_damping: float = 1.0
    yaw_frequency: float = 6.0
    yaw_damping: float = 1.0
    max_tilt_deg: float = 35.0
    """Limit on the tilt of the desired thrust direction, so a large error never flips the vehicle."""
    min_vertical_accel: float = 0.3 * GRAVITY
    """Floor on the upward acceleration demanded before the tilt limit [m/s^2], keeping thrust pointed up."""
    motor_time_constant: float = 0.02
    """Motor lag [s] the mixer makes the rotors appear to have, by over-driving the command (lead).

    Without it the attitude loop oscillates on slow motors: on the Crazyflie (motors fall with 0.25 s)
    no start settled within 0.10 m, and most platforms sampled from RAPTOR's distribution crashed.
    """

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"gain '{name}' must be finite and > 0, got {value}")
        if self.max_tilt_deg >= 90:
            raise ValueError(f"max_tilt_deg must be < 90, got {self.max_tilt_deg}")


class GeometricController:
    """Batched SE(3) controller: PD on position with gravity feed-forward, SO(3) attitude PD, lag-aware mixer.

    It keeps one piece of state per env, the estimated motor commands, propagated with the nominal motor
    lag from the previous action found in each observation (the action actually applied, even if a
    filter or an operator replaced this controller's output).
    """

    def __init__(
        self,
        nominal: NominalQuadrotor,
        gains: GeometricGains | None = None,
        dt: float = 0.01,
        yaw: float = 0.0,
    ):
        """dt: control period [s] (the motor model is propagated by it); yaw: target heading [rad]."""
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be > 0 [s], got {dt}")
        self.nominal = nominal
        self.gains = gains or GeometricGains()
        self.dt = dt
        self.yaw = yaw
        g = self.gains
        self._kp = g.position_frequency**2
        self._kd = 2.0 * g.position_damping * g.position_frequency
        att = np.array((g.attitude_frequency, g.attitude_frequency, g.yaw_frequency))
        damp = np.array((g.attitude_damping, g.attitude_damping, g.yaw_damping))
        j_diag = np.diag(nominal.inertia)
        self._k_rot = j_diag * att**2
        self._k_omega = j_diag * 2.0 * damp * att
        self._mixer_inv = np.linalg.inv(nominal.mixer())
        lo, hi = nominal.motor_command_range
        self._thrust_bounds = nominal.rotor_thrust(np.array((lo, hi)))
        self._tan_tilt = math.tan(math.radians(g.max_tilt_deg))
        self._decay_rising = math.exp(-dt / nominal.motor_tau_rising)
        self._decay_falling = math.exp(-dt / nominal.motor_tau_falling)
        self._decay_target = math.exp(-dt / g.motor_time_constant)
        self._motor_estimate: np.ndarray | None = None
        self._batch_size: int | None = None

    def reset(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._batch_size = batch_size
        self._motor_estimate = None

    def act(self, obs: np.ndarray) -> np.ndarray:
        """[B, 22] observations -> [B, 4] actions in [-1, 1]; raises ValueError on bad input."""
        obs = self._validate(obs)
        lo, hi = self.nominal.motor_command_range
        applied = lo + (np.clip(obs[:, _PREV_ACTION], -1.0, 1.0) + 1.0) * 0.5 * (hi - lo)
        if self._motor_estimate is None:
            # No history yet: assume the motors have settled on the last applied command.
            self._motor_estimate = applied
        else:
            self._motor_estimate = self._propagate_motors(self._motor_estimate, applied)

        force_w = self._desired_force(obs[:, _POS], obs[:, _VEL])
        rot = obs[:, _ROT].reshape(-1, 3, 3)
        total_thrust = np.einsum("ni,ni->n", force_w, rot[:, :, 2])
        torque = self._attitude_torque(rot, obs[:, _OMEGA], self._desired_rotation(force_w))
        command = self._mix(total_thrust, torque, self._motor_estimate)
        return (2.0 * (command - lo) / (hi - lo) - 1.0).astype(obs.dtype)

    def _validate(self, obs: np.ndarray) -> np.ndarray:
        if self._batch_size is None:
            raise RuntimeError("GeometricController.act() called before reset(batch_size)")
        obs = np.asarray(obs)
        expected = (self._batch_size, OBSERVATION_DIM)
        if obs.shape != expected:
            raise ValueError(f"observation shape: expected {expected} (batch, obs), got {obs.shape}")
        if not np.issubdtype(obs.dtype, np.floating):
            obs = obs.astype(np.float64)
        bad = ~np.isfinite(obs)
        if bad.any():
            where = [(int(r), int(c)) for r, c in np.argwhere(bad)[:8]]
            raise ValueError(f"non-finite observation values at (env, index) {where}")
        return obs

    def _propagate_motors(self, estimate: np.ndarray, applied: np.ndarray) -> np.ndarray:
        """Exact one-period solution of the asymmetric first-order motor model."""
        decay = np.where(applied > estimate, self._decay_rising, self._decay_falling)
        return applied + (estimate - applied) * decay

    def _desired_force(self, pos_err: np.ndarray, vel_err: np.ndarray) -> np.ndarray:
        """World-frame thrust vector [N]: PD + gravity, kept upward and within the tilt limit."""
        accel = -self._kp * pos_err - self._kd * vel_err
        vertical = np.maximum(accel[:, 2] + GRAVITY, self.gains.min_vertical_accel)
        horizontal = accel[:, :2]
        h_norm = np.linalg.norm(horizontal, axis=-1)
        h_max = vertical * self._tan_tilt
        scale = np.where(h_norm > h_max, h_max / np.maximum(h_norm, 1e-12), 1.0)
        return self.nominal.mass * np.concatenate((horizontal * scale[:, None], vertical[:, None]), axis=-1)

    def _desired_rotation(self, force_w: np.ndarray) -> np.ndarray:
        """[B, 3, 3] desired body-to-world rotation: body z along the force, heading at the target yaw."""
        b3 = force_w / np.linalg.norm(force_w, axis=-1, keepdims=True)
        heading = np.array((math.cos(self.yaw), math.sin(self.yaw), 0.0))
        b2 = np.cross(b3, heading)
        b2 /= np.linalg.norm(b2, axis=-1, keepdims=True)
        b1 = np.cross(b2, b3)
        return np.stack((b1, b2, b3), axis=-1)

    def _attitude_torque(self, rot: np.ndarray, omega: np.ndarray, rot_des: np.ndarray) -> np.ndarray:
        """Body torque [N m] from the SO(3) error e_R = vee(R_d^T R - R^T R_d) / 2 and the rate error."""
        m = np.einsum("nji,njk->nik", rot_des, rot)
        skew = 0.5 * (m - np.swapaxes(m, 1, 2))
        e_rot = np.stack((skew[:, 2, 1], skew[:, 0, 2], skew[:, 1, 0]), axis=-1)
        j_omega = omega @ self.nominal.inertia.T
        return -self._k_rot * e_rot - self._k_omega * omega + np.cross(omega, j_omega)

    def _mix(self, total_thrust: np.ndarray, torque: np.ndarray, estimate: np.ndarray) -> np.ndarray:
        """Rotor thrusts from the inverted mixer, then motor commands that undo most of the motor lag."""
        f_lo, f_hi = self._thrust_bounds
        total = np.clip(total_thrust, 4.0 * f_lo, 4.0 * f_hi)
        thrust = np.concatenate((total[:, None], torque), axis=-1) @ self._mixer_inv.T
        # Keep the torques and give up collective thrust when a rotor saturates: attitude keeps it flying.
        thrust -= np.maximum(thrust.max(axis=-1, keepdims=True) - f_hi, 0.0)
        thrust += np.maximum(f_lo - thrust.min(axis=-1, keepdims=True), 0.0)
        desired = self.nominal.motor_command(np.clip(thrust, f_lo, f_hi))
        # Command that moves the (estimated) motor as far in one period as a motor_time_constant lag would.
        decay = np.where(desired > estimate, self._decay_rising, self._decay_falling)
        lead = np.maximum((1.0 - self._decay_target) / (1.0 - decay), 1.0)
        return np.clip(estimate + (desired - estimate) * lead, *self.nominal.motor_command_range)
