"""Batched quadrotor task: reach and hold a target, or track a moving one, from randomized starts.

Follows rsl_rl's VecEnv conventions: torch tensors of shape [num_envs, ...], automatic reset of
finished envs with the last observation of the finished episode in info["final_obs"], terminated
and truncated apart, and privileged observations for teachers and asymmetric critics in
info["privileged_obs"].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from robotrl.envs.quadrotor.dynamics import (
    ANGVEL_B,
    LINVEL_W,
    MOTORS,
    POS_W,
    QUAT_WXYZ,
    STATE_DIM,
    QuadrotorDynamics,
    quat_from_axis_angle,
)
from robotrl.envs.quadrotor.observations import ACTION_DIM, OBSERVATION_DIM, raptor_observation
from robotrl.envs.quadrotor.params import GRAVITY, QuadrotorParams
from robotrl.envs.quadrotor.platforms import RaptorDistribution, load_platform
from robotrl.envs.quadrotor.targets import TargetConfig, TargetGenerator

PRIVILEGED_FIELDS: tuple[tuple[str, int], ...] = (
    ("motor_state", 4),
    ("log_mass", 1),
    ("thrust_to_weight", 1),
    ("log_inertia_diag", 3),
    ("arm_length_log", 1),
    ("motor_tau_rising", 1),
    ("motor_tau_falling", 1),
    ("rotor_torque_constant", 1),
    ("disturbance_accel_w", 3),
    ("target_velocity_w", 3),
    ("rotor_thrust_loss", 4),
    ("log_mass_ratio", 1),
    ("rotor_hover_change", 4),
)
"""After the policy observation, in this order. The parameters are the current ones: a payload, a weak rotor
or a gust (ChangeConfig, robotrl.envs.quadrotor.mid_flight) shows here from the step it happens."""
PRIVILEGED_DIM = OBSERVATION_DIM + sum(size for _, size in PRIVILEGED_FIELDS)


def privileged_slice(name: str) -> slice:
    start = OBSERVATION_DIM
    for field_name, size in PRIVILEGED_FIELDS:
        if field_name == name:
            return slice(start, start + size)
        start += size
    raise KeyError(name)


TEACHER_FIELDS = ("disturbance_accel_w", "rotor_thrust_loss", "log_mass_ratio", "rotor_hover_change")
"""What a RAPTOR teacher sees beyond the policy observation: what changes its quadrotor during a flight.
Everything else it could be told is constant for a teacher trained on one quadrotor. Each is 0 on the nominal
quadrotor: constant non-zero inputs (efficiencies of 1, raw hover actions) act as large random first-layer
biases, and with them only 8 of 16 teachers were kept against 15 of 16 (measured, README). The last field,
how far each rotor's share of a level hover at the current mass and efficiencies is from the nominal hover
action, is what a teacher adds to its actor's output on top of that action (TEACHER_FEEDFORWARD,
`policy.action_offset: rotor_hover`)."""
_TEACHER_SLICES = tuple(privileged_slice(name) for name in TEACHER_FIELDS)
TEACHER_OBSERVATION_DIM = OBSERVATION_DIM + sum(s.stop - s.start for s in _TEACHER_SLICES)


TEACHER_FEEDFORWARD = (TEACHER_OBSERVATION_DIM - ACTION_DIM, TEACHER_OBSERVATION_DIM)
"""[start, stop) of rotor_hover_change in the teacher observation."""
TEACHER_DISTURBANCE = (OBSERVATION_DIM, OBSERVATION_DIM + 3)
"""[start, stop) of the disturbance in the teacher observation; the change fields follow it."""


def teacher_observation(privileged_obs: torch.Tensor, sees_disturbance: bool = True) -> torch.Tensor:
    """[N, TEACHER_OBSERVATION_DIM] from the privileged observation: the clean policy observation with the
    previous action less each rotor's hover action change, the disturbance in units of g, each rotor's thrust
    loss (1 - efficiency), the log mass ratio to the start and each rotor's hover action change. Without
    `sees_disturbance` the disturbance columns are 0.

    The previous action is read relative to the hover change because a teacher adds that change to its
    output (TEACHER_FEEDFORWARD): holding the new hover after a payload or a weak rotor, it then sees what
    it saw holding the old one. Read raw, the raised previous action, a value it never met on its one
    quadrotor, held teachers trained without changes 0.09-0.12 m above the target after a 30 % payload
    (README). Without changes the hover change is 0 and this is the raw observation."""
    disturbance, rotors, mass, hover = (privileged_obs[:, s] for s in _TEACHER_SLICES)
    if not sees_disturbance:
        disturbance = torch.zeros_like(disturbance)
    state = privileged_obs[:, : OBSERVATION_DIM - ACTION_DIM]
    previous = privileged_obs[:, OBSERVATION_DIM - ACTION_DIM : OBSERVATION_DIM] - hover
    return torch.cat((state, previous, disturbance / GRAVITY, rotors, mass, hover), dim=-1)


@dataclass
class InitConfig:
    """Ranges of the random initial state, relative to the target."""

    position_m: float = 0.5
    """Uniform per axis in [-position_m, position_m] [m]."""
    tilt_deg: float = 30.0
    """Attitude: a random axis, angle uniform in [0, tilt_deg] [deg]; yaw is part of it."""
    velocity_mps: float = 0.5
    """Uniform per axis [m/s], world frame."""
    angular_velocity_radps: float = 1.0
    """Uniform per axis [rad/s], body frame."""


@dataclass
class RewardConfig:
    """Weights of the named reward terms; the reward is constant - sum(weight * cost) per step.

    After RAPTOR's teachers (ANCHORS §1: position 1, orientation 0.1, action change 1, constant 1.5,
    termination -100) with Learning-to-Fly's small velocity terms (ANCHORS §2).
    """

    constant: float = 1.5
    position: float = 1.0
    """Squared position error [m^2]."""
    position_norm: float = 0.0
    """Position error norm [m]: unlike the square, it keeps pulling near the target, which removes the
    few-centimetre standing offset PPO otherwise settles into."""
    orientation: float = 0.1
    linear_velocity: float = 0.05
    angular_velocity: float = 0.01
    action: float = 0.0
    action_rate: float = 1.0
    termination: float = -100.0
    non_negative: bool = False
    """Clamp the per-step reward at 0 before the termination penalty (an option of RAPTOR's trainer):
    with large position weights the reward far from the target is negative, and ending the episode
    would then pay better than flying back."""


def _check_range(name: str, bounds: tuple[float, float], low: float, high: float = math.inf) -> None:
    a, b = bounds
    if not (low <= a <= b <= high):
        raise ValueError(f"changes.{name} must be (lo, hi) with {low} <= lo <= hi <= {high}, got {bounds}")


@dataclass
class ChangeConfig:
    """Mid-episode changes for training: at a random time a payload, a weaker rotor or a gust, the kinds of
    change the evaluation suite's adaptation flights make (robotrl.envs.quadrotor.mid_flight).

    A teacher sees each change in its privileged observation and learns to fly through it; a student
    distilled in the same envs has to notice it from the flight alone, which is what makes RAPTOR adapt.
    """

    probability: float = 0.0
    """Fraction of episodes with one change, its kind drawn from CHANGE_KINDS with `kind_weights`."""
    kind_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Relative odds of a payload, a weak rotor and a gust."""
    window_s: tuple[float, float] = (0.5, 4.0)
    """The change happens at a time uniform in this window [s]."""
    mass_factor: tuple[float, float] = (1.1, 1.4)
    """Payload at the centre of mass: mass times a factor uniform in this range."""
    rotor_efficiency: tuple[float, float] = (0.6, 0.9)
    """One rotor, drawn uniformly, keeps this fraction of its thrust and drag torque."""
    gust_weight_fraction: tuple[float, float] = (0.2, 0.8)
    """Horizontal push in a random direction, in units of the quadrotor's weight."""
    gust_s: tuple[float, float] = (0.1, 0.5)
    """How long the push lasts [s]."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"changes.probability must be in [0, 1], got {self.probability}")
        _check_range("window_s", self.window_s, 0.0)
        _check_range("mass_factor", self.mass_factor, 1e-3)
        _check_range("rotor_efficiency", self.rotor_efficiency, 0.0, 1.0)
        _check_range("gust_weight_fraction", self.gust_weight_fraction, 0.0)
        _check_range("gust_s", self.gust_s, 1e-9)
        weights = self.kind_weights
        if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"changes.kind_weights must be 3 odds >= 0 (mass, rotor, gust), not all 0, got {weights}"
            )


CHANGE_KINDS = ("mass", "rotor", "gust")
_MASS, _ROTOR, _GUST = range(len(CHANGE_KINDS))


@dataclass
class QuadrotorEnvConfig:
    num_envs: int = 1024
    platform: str = "crazyflie"
    """A named platform in sim/quadrotor/, a platform .yaml path, or 'raptor' for the sampled distribution."""
    dt: float = 0.01
    """Control period [s] (100 Hz)."""
    substeps: int = 1
    """RK4 steps per control period."""
    episode_length_s: float = 5.0
    init: InitConfig = field(default_factory=InitConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    max_position_error_m: float = 1.5
    """Terminate when the position error exceeds this [m]."""
    max_linear_velocity_mps: float = 10.0
    max_angular_velocity_radps: float = 35.0
    disturbance_max_weight_fraction: float = 0.0
    """Constant per-episode world force: up to this fraction of (T/W - 1) x weight (RAPTOR: 0.3)."""
    teacher_sees_disturbance: bool = True
    """Whether a teacher's observation carries that force and the gusts (teacher_observation). RAPTOR's
    teachers are not told it (ANCHORS section 1: rotor speeds and the trajectory). Tried at 0.3 on 64
    teachers (README): 25 kept, and those recovered worse from a payload, a weak rotor and a gust."""
    changes: ChangeConfig = field(default_factory=ChangeConfig)
    observation: Literal["raptor", "teacher"] = "raptor"
    """What observe() returns: RAPTOR's 22 values, or a teacher's (teacher_observation: the 22 plus what
    changes the quadrotor in flight, TEACHER_FIELDS)."""
    observation_noise: float = 0.0
    """Std of Gaussian noise added to the policy observation (not the privileged one)."""
    initial_previous_action: Literal["hover", "zero"] = "hover"
    """The 'previous action' of an episode's first observation: the quadrotor's own hover action, or 0 as
    RAPTOR and the robot-side policy node use (a policy for many quadrotors must not be told their hover
    command)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.observation not in ("raptor", "teacher"):
            raise ValueError(f"observation must be 'raptor' or 'teacher', got {self.observation!r}")
        if self.initial_previous_action not in ("hover", "zero"):
            raise ValueError(
                f"initial_previous_action must be 'hover' or 'zero', got {self.initial_previous_action!r}"
            )
        if self.dt <= 0 or self.episode_length_s < self.dt:
            raise ValueError(
                f"need dt > 0 and episode_length_s >= dt, got {self.dt}, {self.episode_length_s}"
            )

    @property
    def max_episode_steps(self) -> int:
        return round(self.episode_length_s / self.dt)


def sample_initial_state(
    params: QuadrotorParams,
    init: InitConfig,
    target_position_w: torch.Tensor,
    target_velocity_w: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Random starts [N, STATE_DIM] around the targets: InitConfig ranges, motors at hover."""
    n, dev = params.num_envs, params.device

    def uniform(scale: float, *shape: int) -> torch.Tensor:
        return scale * (2.0 * torch.rand(*shape, generator=generator, device=dev) - 1.0)

    axis = torch.randn(n, 3, generator=generator, device=dev)
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    angle = torch.rand(n, generator=generator, device=dev) * math.radians(init.tilt_deg)
    state = torch.zeros(n, STATE_DIM, device=dev)
    state[:, POS_W] = target_position_w + uniform(init.position_m, n, 3)
    state[:, QUAT_WXYZ] = quat_from_axis_angle(axis, angle)
    state[:, LINVEL_W] = target_velocity_w + uniform(init.velocity_mps, n, 3)
    state[:, ANGVEL_B] = uniform(init.angular_velocity_radps, n, 3)
    state[:, MOTORS] = params.hover_command().unsqueeze(-1)
    return state


class QuadrotorEnv:
    """A batch of quadrotors flying the task in QuadrotorEnvConfig, stepped together."""

    observation_dim = OBSERVATION_DIM
    privileged_dim = PRIVILEGED_DIM
    action_dim = ACTION_DIM

    def __init__(
        self,
        config: QuadrotorEnvConfig,
        device: str | torch.device = "cpu",
        params: QuadrotorParams | None = None,
    ):
        self.config = config
        self.num_envs = config.num_envs
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        if params is None:
            params = self._make_params(config, self.generator)
        if params.num_envs != config.num_envs:
            raise ValueError(
                f"params hold {params.num_envs} quadrotors, config asks for {config.num_envs} envs"
            )
        self.dynamics = QuadrotorDynamics(params.to(self.device), config.dt, config.substeps)
        self.nominal_params = self.params
        """The quadrotors as built; changes during a flight replace `params`, never these."""
        self.observation_dim = TEACHER_OBSERVATION_DIM if config.observation == "teacher" else OBSERVATION_DIM
        self._hover_action = self.params.hover_action().unsqueeze(-1)
        self._privileged_cache: dict[str, tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]] = {}
        n = self.num_envs
        # Mid-episode changes (ChangeConfig): what each env's episode holds and where it stands.
        self._mass_factor = torch.ones(n, device=self.device)
        self._rotor_scale = torch.ones(n, 4, device=self.device)
        self._change_step = torch.full((n,), -1, dtype=torch.long, device=self.device)
        self._change_kind = torch.zeros(n, dtype=torch.long, device=self.device)
        self._change_value = torch.zeros(n, device=self.device)
        self._change_rotor = torch.zeros(n, dtype=torch.long, device=self.device)
        self._gust_force_w = torch.zeros(n, 3, device=self.device)
        self._gust_end_step = torch.full((n,), -1, dtype=torch.long, device=self.device)
        self.state = torch.zeros(n, STATE_DIM, device=self.device)
        self.previous_action = torch.zeros(n, ACTION_DIM, device=self.device)
        self.disturbance_force_w = torch.zeros(n, 3, device=self.device)
        self.episode_step = torch.zeros(n, dtype=torch.long, device=self.device)
        self.targets = TargetGenerator(config.target, n, self.device)
        self.target_position_w = torch.zeros(n, 3, device=self.device)
        self.target_velocity_w = torch.zeros(n, 3, device=self.device)
        # Every other RewardConfig field weighs the cost of the same name.
        self._reward_weights = {
            f.name: getattr(config.reward, f.name)
            for f in dataclasses.fields(RewardConfig)
            if f.name not in ("constant", "termination", "non_negative")
        }
        self.episode_sums = {name: torch.zeros(n, device=self.device) for name in self._reward_weights}
        self._refresh_observation()

    @staticmethod
    def _make_params(config: QuadrotorEnvConfig, generator: torch.Generator) -> QuadrotorParams:
        if config.platform == "raptor":
            return RaptorDistribution().sample(config.num_envs, generator)
        return load_platform(config.platform).repeat(config.num_envs)

    @property
    def params(self) -> QuadrotorParams:
        return self.dynamics.params

    @property
    def time_s(self) -> torch.Tensor:
        return self.episode_step.float() * self.config.dt

    # ----------------------------------------------------------------------------------- reset
    def reset(self, seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            self.generator.manual_seed(seed)
        self.reset_idx(torch.arange(self.num_envs, device=self.device))
        return self.observe()

    def reset_idx(self, env_ids: torch.Tensor) -> None:
        """Draw new initial states (and disturbances, and target phases) for env_ids."""
        n = env_ids.numel()
        if n == 0:
            return
        g, dev = self.generator, self.device
        self.episode_step[env_ids] = 0
        self.targets.reset_idx(env_ids, g)
        target_pos, target_vel = self.targets(self.time_s, g)  # full batch; the reset envs are at t=0
        self.target_position_w[env_ids] = target_pos[env_ids]
        self.target_velocity_w[env_ids] = target_vel[env_ids]
        params = self.params.index(env_ids)
        self.state[env_ids] = sample_initial_state(
            params, self.config.init, self.target_position_w[env_ids], self.target_velocity_w[env_ids], g
        )
        if self.config.initial_previous_action == "hover":
            self.previous_action[env_ids] = params.hover_action().unsqueeze(-1).expand(n, ACTION_DIM)
        else:
            self.previous_action[env_ids] = 0.0

        max_force = self.config.disturbance_max_weight_fraction * (params.thrust_to_weight - 1.0).clamp_min(
            0.0
        )
        direction = torch.randn(n, 3, generator=g, device=dev)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        magnitude = torch.rand(n, generator=g, device=dev) * max_force * params.mass * GRAVITY
        self.disturbance_force_w[env_ids] = direction * magnitude.unsqueeze(-1)
        if self.config.changes.probability > 0:
            self._draw_changes(env_ids)
        for total in self.episode_sums.values():
            total[env_ids] = 0.0
        self._refresh_observation()

    def _draw_changes(self, env_ids: torch.Tensor) -> None:
        """Undo the reset envs' changes and draw their next episode's (ChangeConfig)."""
        c, g, dev, n = self.config.changes, self.generator, self.device, env_ids.numel()
        heavier = bool((self._mass_factor[env_ids] != 1.0).any())
        weaker = bool((self._rotor_scale[env_ids] != 1.0).any())
        self._mass_factor[env_ids] = 1.0
        self._rotor_scale[env_ids] = 1.0
        self._gust_end_step[env_ids] = -1  # the reset drew a new disturbance force: no gust left to undo
        self._rebuild_params(heavier, weaker)

        def uniform(bounds: tuple[float, float]) -> torch.Tensor:
            return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, generator=g, device=dev)

        happens = torch.rand(n, generator=g, device=dev) < c.probability
        at = torch.round(uniform(c.window_s) / self.config.dt).long()
        self._change_step[env_ids] = torch.where(happens, at, -1)
        odds = torch.tensor(c.kind_weights, dtype=torch.float32, device=dev)
        kind = torch.multinomial(odds, n, replacement=True, generator=g)
        self._change_kind[env_ids] = kind
        value = torch.stack(
            (uniform(c.mass_factor), uniform(c.rotor_efficiency), uniform(c.gust_weight_fraction))
        )
        self._change_value[env_ids] = value.gather(0, kind.unsqueeze(0)).squeeze(0)
        self._change_rotor[env_ids] = torch.randint(4, (n,), generator=g, device=dev)
        heading = 2.0 * math.pi * torch.rand(n, generator=g, device=dev)
        weight = self.nominal_params.mass[env_ids] * GRAVITY
        gust = self._change_value[env_ids] * weight
        self._gust_force_w[env_ids] = torch.stack(
            (gust * torch.cos(heading), gust * torch.sin(heading), torch.zeros_like(gust)), dim=-1
        )
        duration = torch.round(uniform(c.gust_s) / self.config.dt).long().clamp_min(1)
        self._gust_end_step[env_ids] = torch.where(happens & (kind == _GUST), at + duration, -1)

    def _apply_changes(self) -> None:
        """Start the changes due at this step and end the gusts that are over."""
        step = self.episode_step
        ending = step == self._gust_end_step
        if ending.any():
            self.disturbance_force_w[ending] -= self._gust_force_w[ending]
        due = step == self._change_step
        if not due.any():
            return
        kind = self._change_kind
        gust = due & (kind == _GUST)
        self.disturbance_force_w[gust] += self._gust_force_w[gust]
        mass, rotor = due & (kind == _MASS), (due & (kind == _ROTOR)).nonzero().squeeze(-1)
        self._mass_factor[mass] = self._change_value[mass]
        self._rotor_scale[rotor, self._change_rotor[rotor]] = self._change_value[rotor]
        self._rebuild_params(bool(mass.any()), rotor.numel() > 0)

    def _rebuild_params(self, mass: bool, rotors: bool) -> None:
        """New params with the changed factors applied; a tensor that did not change stays the same object,
        so the dynamics and the privileged observation rebuild only what reads a changed one."""
        if not (mass or rotors):
            return
        nominal, current, new = self.nominal_params, self.params, {}
        if mass:
            new["mass"] = nominal.mass * self._mass_factor
        if rotors:
            new["rotor_thrust_scale"] = nominal.rotor_thrust_scale * self._rotor_scale
        self.dynamics.set_params(dataclasses.replace(current, **new))

    # ----------------------------------------------------------------------------------- step
    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, object]]:
        """Apply actions [N, 4] in [-1, 1]; returns (obs, reward, terminated, truncated, info)."""
        if action.shape != (self.num_envs, ACTION_DIM):
            raise ValueError(
                f"action must have shape ({self.num_envs}, {ACTION_DIM}), got {tuple(action.shape)}"
            )
        # A non-finite action ends that env's episode only; the others never see it.
        bad_action = ~torch.isfinite(action).all(-1)
        action = torch.where(bad_action.unsqueeze(-1), self.previous_action, action).clamp(-1.0, 1.0)

        if self.config.changes.probability > 0:
            self._apply_changes()
        self.state = self.dynamics.step(self.state, action, self.disturbance_force_w)
        self.episode_step += 1
        target_pos, target_vel = self.targets(self.time_s, self.generator)
        self.target_position_w, self.target_velocity_w = target_pos, target_vel

        bad_state = ~torch.isfinite(self.state).all(-1)
        nonfinite = bad_action | bad_state
        if nonfinite.any():
            self.state[bad_state] = 0.0
            self.state[bad_state, QUAT_WXYZ.start] = 1.0

        costs = self._costs(action)
        reward = self.config.reward.constant - sum(self._reward_weights[k] * c for k, c in costs.items())
        if self.config.reward.non_negative:
            reward = reward.clamp_min(0.0)
        for name, cost in costs.items():
            self.episode_sums[name] += cost
        self.previous_action = action

        terminated = self._terminated() | nonfinite
        truncated = (self.episode_step >= self.config.max_episode_steps) & ~terminated
        reward = torch.where(terminated, torch.full_like(reward, self.config.reward.termination), reward)

        self._refresh_observation()
        privileged = self.privileged_observation()
        obs = self.observe(privileged)
        info: dict[str, object] = {"time_outs": truncated, "nonfinite": nonfinite}
        done = terminated | truncated
        if done.any():
            ids = done.nonzero().squeeze(-1)
            info["final_obs"] = obs.clone()
            info["final_privileged_obs"] = privileged
            info["episode"] = {f"cost/{k}": v[ids].mean().item() for k, v in self.episode_sums.items()}
            info["episode"]["episode_length_s"] = self.time_s[ids].float().mean().item()
            self.reset_idx(ids)
            privileged = self.privileged_observation()
            obs = self.observe(privileged)
        info["privileged_obs"] = privileged
        return obs, reward, terminated, truncated, info

    def _costs(self, action: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each named cost, [N]; weighted by RewardConfig of the same name."""
        s = self.state
        pos_err = s[:, POS_W] - self.target_position_w
        vel_err = s[:, LINVEL_W] - self.target_velocity_w
        qw = s[:, QUAT_WXYZ.start]
        position = (pos_err * pos_err).sum(-1)
        return {
            "position": position,
            "position_norm": position.sqrt(),
            "orientation": 1.0 - qw * qw,  # 0 level with any yaw error penalised, 1 upside down
            "linear_velocity": (vel_err * vel_err).sum(-1),
            "angular_velocity": (s[:, ANGVEL_B] ** 2).sum(-1),
            "action": ((action - self._hover_action) ** 2).sum(-1),
            "action_rate": ((action - self.previous_action) ** 2).sum(-1),
        }

    def _terminated(self) -> torch.Tensor:
        # Squared norms against squared bounds: the state is a transposed view, and linalg norms over its
        # strided columns cost 0.5 ms each at 8192 envs (a twentieth of a farm's env step).
        cfg, s = self.config, self.state
        pos_err = s[:, POS_W] - self.target_position_w
        return (
            ((pos_err * pos_err).sum(-1) > cfg.max_position_error_m**2)
            | ((s[:, LINVEL_W] ** 2).sum(-1) > cfg.max_linear_velocity_mps**2)
            | ((s[:, ANGVEL_B] ** 2).sum(-1) > cfg.max_angular_velocity_radps**2)
        )

    # ----------------------------------------------------------------------------------- observe
    def _refresh_observation(self) -> None:
        """Build the noise-free observation once per state change; observe() and the critic share it."""
        self._clean_obs = raptor_observation(
            self.state, self.target_position_w, self.target_velocity_w, self.previous_action
        )

    def observe(self, privileged: torch.Tensor | None = None) -> torch.Tensor:
        """The policy observation [N, observation_dim], with observation noise if configured.

        `privileged`: this state's privileged_observation() when the caller has built it already (step
        does), so that a teacher's observation does not build it twice.
        """
        if self.config.observation == "teacher":
            obs = teacher_observation(
                self.privileged_observation() if privileged is None else privileged,
                self.config.teacher_sees_disturbance,
            )
        else:
            obs = self._clean_obs
        if self.config.observation_noise > 0:
            obs = obs + self.config.observation_noise * torch.randn(
                obs.shape, generator=self.generator, device=self.device
            )
        return obs

    def privileged_observation(self) -> torch.Tensor:
        """The noise-free policy observation plus what only a simulator knows (PRIVILEGED_FIELDS)."""
        p = self.params
        loading, rotor_hover = self._cached("loading", p, _LOADING_FIELDS, _loading_terms)
        (nominal_hover,) = self._cached(
            "nominal_hover", self.nominal_params, _LOADING_FIELDS, lambda q: (q.rotor_hover_action(),)
        )
        return torch.cat(
            (
                self._clean_obs,
                self.state[:, MOTORS],
                loading,
                self._cached("build", p, _BUILD_FIELDS, _build_terms)[0],
                self.disturbance_force_w / p.mass.unsqueeze(-1),
                self.target_velocity_w,
                1.0 - p.rotor_thrust_scale,
                (p.mass / self.nominal_params.mass).log().unsqueeze(-1),
                rotor_hover - nominal_hover,
            ),
            dim=-1,
        )

    def _cached(
        self,
        name: str,
        params: QuadrotorParams,
        fields: tuple[str, ...],
        terms: Callable[[QuadrotorParams], tuple[torch.Tensor, ...]],
    ) -> tuple[torch.Tensor, ...]:
        """`terms(params)`, recomputed only when one of the tensors in `fields` is a new object: with
        mid-flight changes the params are replaced nearly every step of a farm, but only mass and rotor
        efficiencies change (rebuilding all of it took about a tenth of a step at 8192 envs)."""
        key = tuple(getattr(params, f) for f in fields)
        cached = self._privileged_cache.get(name)
        if cached is None or any(a is not b for a, b in zip(cached[0], key, strict=True)):
            cached = (key, terms(params))
            self._privileged_cache[name] = cached
        return cached[1]


_LOADING_FIELDS = ("mass", "thrust_curve", "motor_command_range", "rotor_thrust_scale")
_BUILD_FIELDS = (
    "inertia",
    "rotor_positions",
    "motor_tau_rising",
    "motor_tau_falling",
    "rotor_torque_constant",
)


def _loading_terms(p: QuadrotorParams) -> tuple[torch.Tensor, ...]:
    """log_mass and thrust_to_weight [N, 2], rotor_hover_action [N, 4]: what payloads and weak rotors move."""
    return torch.stack((p.mass.log(), p.thrust_to_weight), dim=-1), p.rotor_hover_action()


def _build_terms(p: QuadrotorParams) -> tuple[torch.Tensor]:
    """log_inertia_diag, arm_length_log, motor taus and rotor_torque_constant [N, 7]: fixed in flight."""
    return (
        torch.cat(
            (
                torch.diagonal(p.inertia, dim1=-2, dim2=-1).log(),
                p.arm_length.log().unsqueeze(-1),
                torch.stack((p.motor_tau_rising, p.motor_tau_falling, p.rotor_torque_constant), dim=-1),
            ),
            dim=-1,
        ),
    )
