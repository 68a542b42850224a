"""Batched quadruped jumping to a commanded landing pose, after the reference-free curriculum (ANCHORS §3).

Each episode carries a 13-value command from the curriculum (landing position and yaw relative to the
start, an optional obstacle box). The phases (flight, landing, has_jumped) come from foot contacts;
the task rewards are paid once, at the first landing, and the terminations after it hold the robot to
where it landed. Follows the batched-env contract of DESIGN.md like the quadrotor env: torch tensors
[num_envs, ...], automatic reset with the finished episode's last observations in info, terminated and
truncated apart, privileged observations for the critic.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from robotrl.control.legged import ema_alpha
from robotrl.envs.quadruped.curriculum import (
    COMMAND_DIM,
    COMMAND_FIELDS,
    LANDING_POS,
    LANDING_QUAT,
    OBSTACLE_CENTRE,
    OBSTACLE_SIZE,
    CurriculumConfig,
    JumpCurriculum,
)
from robotrl.envs.quadruped.model import LEGS, NUM_JOINTS, A1Config
from robotrl.envs.quadruped.phases import JumpPhases
from robotrl.envs.quadruped.sim import QuadrupedSim, QuadrupedSimConfig, QuadrupedState

if TYPE_CHECKING:
    from robotrl.envs.quadruped.pybullet_sim import PybulletQuadrupedSim

OBSERVATION_FIELDS: tuple[tuple[str, int, str, str], ...] = (
    ("projected_gravity_b", 3, "1", "unit gravity direction in the body frame (FLU)"),
    ("base_angvel_b", 3, "rad/s", "body FLU"),
    ("joint_pos_rel", 12, "rad", "joint position minus the default pose, JOINT_NAMES order"),
    ("joint_vel", 12, "rad/s", "JOINT_NAMES order"),
    ("previous_action", 12, "1", "last policy action after clipping, JOINT_NAMES order"),
    *COMMAND_FIELDS,
    ("has_jumped", 1, "1", "1 once all four feet have been off the ground this episode"),
    ("episode_time", 1, "s", "time since the episode (the jump command) started"),
)
"""(name, size, unit, frame) of each policy observation field, in order."""
OBSERVATION_DIM = sum(size for _, size, _, _ in OBSERVATION_FIELDS)
PRIVILEGED_FIELDS: tuple[tuple[str, int, str, str], ...] = (
    ("base_linvel_b", 3, "m/s", "body FLU"),
    ("base_height", 1, "m", "above the floor"),
    ("foot_contact", 4, "1", "LEGS order"),
    ("target_offset_w", 3, "m", "landing target minus base position, world"),
    ("max_height_gain", 1, "m", "highest base height before landing minus standing height"),
    ("has_landed", 1, "1", "1 after the first landing"),
    ("randomisation", 5, "mixed", "added trunk mass [kg], foot friction, kp, kd scale, delay [steps]"),
)
"""Appended to the policy observation for the critic: what the task rewards depend on but a robot lacks."""
PRIVILEGED_DIM = OBSERVATION_DIM + sum(size for _, size, _, _ in PRIVILEGED_FIELDS)
ACTION_FIELDS: tuple[tuple[str, int, str, str], ...] = (
    ("joint_targets", 12, "1", "target = default + 0.25 action (hips x hip_action_scale) [rad]"),
)
ACTION_DIM = NUM_JOINTS
GRAVITY = 9.81


@dataclass
class RewardConfig:
    """Weights of the named terms; reward = policy_dt * sum(weight * term). ANCHORS §3 forward stage."""

    task_position: float = 1500.0
    """At the first landing: exp(-horizontal landing error^2 / position_sigma)."""
    task_distance: float = 750.0
    """At the first landing: what a wide kernel (distance_sigma) pays beyond the task kernel (ours).
    The task kernel pays almost nothing once a jump falls 0.3 m short, so a policy that fails a far
    command earned as much by jumping high in place as by jumping far; this pays more the nearer a jump
    came, and about nothing on target, so it does not make a landing on target worth more than before
    (adding the wide kernel itself did: the in-place stage then stalled at a 0.126 m apex gain)."""
    task_orientation: float = 1500.0
    """At the first landing: exp(-orientation error^2 / orientation_sigma)."""
    max_height: float = 5000.0
    """Each rise of the episode's highest base height before landing [m]; sums to the apex gain."""
    jumping_bonus: float = 200.0
    """At the first landing: 1 if the apex base height exceeded bonus_height_m."""
    termination: float = -20.0
    """1 on the step an episode terminates (not at a time-out)."""
    post_landing_position: float = 3.0
    post_landing_orientation: float = 6.0
    """Every step after the first landing: the task kernels again."""
    flight_base_height: float = 100.0
    """In flight: base height above standing [m]."""
    linvel_tracking: float = 30.0
    """Before landing: exp(-|v_xy - v_des|^2 / velocity_sigma), v_des the ballistic take-off velocity."""
    default_pose: float = 12.0
    """After the first landing: exp(-|q - q_default|^2 / pose_sigma)."""
    feet_distance: float = -20.0
    """Shortfall of each left-right foot pair's lateral spacing below min_feet_distance_m [m]."""
    symmetry: float = -3.0
    """Squared left-right difference of mirrored joint angles [rad^2]."""
    contact_forces: float = -5.0
    """Foot normal force above max_contact_force_n, summed [N]."""
    action_rate: float = -0.2
    joint_limits: float = -10.0
    """Joint angle beyond the soft limits, summed [rad]."""
    energy: float = -1e-3
    """Mechanical power |tau * qdot| summed over joints [W]."""


@dataclass
class RewardShapingConfig:
    """Kernel widths and thresholds of the reward terms (ours unless marked)."""

    position_sigma_m2: float = 0.05
    """ANCHORS §3 sigma, as exp(-e^2 / sigma) [m^2]."""
    distance_sigma_m2: float = 0.3
    """Of task_distance's wide kernel: 0.74 at 0.3 m short (the task kernel: 0.17), 0.12 at 0.8 m [m^2]."""
    orientation_sigma_rad2: float = 0.25
    velocity_sigma_m2ps2: float = 1.0
    pose_sigma_rad2: float = 1.0
    bonus_height_m: float = 0.5
    """Apex base height that earns the jumping bonus (ANCHORS §3, Go1) [m]."""
    planned_apex_gain_m: float = 0.2
    """Apex gain of the ballistic flight that sets the tracked take-off velocity [m]."""
    min_feet_distance_m: float = 0.2
    max_contact_force_n: float = 200.0
    """Above the landing of a 0.4 m drop at zero action, which peaks near 150 N a foot (measured) [N]."""
    soft_joint_limit: float = 0.9
    """Share of each joint's range, about its middle, that is free of the limit penalty."""


@dataclass
class TerminationConfig:
    """ANCHORS §3; the landing checks apply from the first landing on."""

    max_landing_error_m: float = 0.2
    """Horizontal distance of the base from the landing target [m]."""
    max_landing_yaw_error_rad: float = 0.5
    max_post_landing_drift_m: float = 0.1
    """Horizontal distance from where the base was at the first landing [m]."""
    min_base_height_m: float = 0.12


@dataclass
class RandomisationConfig:
    """Per-episode domain randomisation (ANCHORS §3), drawn at each env's reset."""

    enabled: bool = False
    added_mass_kg: tuple[float, float] = (-1.0, 3.0)
    foot_friction: tuple[float, float] = (0.4, 1.5)
    """Milder than ANCHORS' 0.01-3 to start with."""
    pd_gain_scale: float = 0.1
    """kp and kd each scaled by a uniform factor in 1 +- this."""
    action_delay_steps: tuple[int, int] = (0, 2)
    """Latency as whole policy steps (0-40 ms at 50 Hz), inclusive."""
    impratio: tuple[float, float] = (1.0, 1.0)
    """MuJoCo's frictional-to-normal impedance ratio (A1Config.impratio), log-uniform (ours): how far a
    pushing foot creeps is a simulator's choice, and a policy fit to one creep jumps to other lengths
    in a stiffer one (measured: a 0.5 m jump policy flew 0.59 m at 1, 0.69 m at 10, 0.65 m in pybullet).
    Not in the critic's privileged input. (1, 1): off, and no random number is drawn for it."""

    def __post_init__(self) -> None:
        if not 1.0 <= self.impratio[0] <= self.impratio[1]:
            raise ValueError(
                f"impratio must be a range (low, high) with 1 <= low <= high, got {self.impratio}"
            )


@dataclass
class QuadrupedJumpEnvConfig:
    num_envs: int = 64
    num_threads: int = 2
    upward_episode_s: float = 3.0
    forward_episode_s: float = 4.0
    """Episode length of in-place jumps and of jumps with a horizontal target (ANCHORS §3) [s]."""
    hip_action_scale: float = 0.5
    """Hip actions are scaled by this on top of the sim's 0.25 (ANCHORS §3)."""
    action_clip: float = 10.0
    action_filter_hz: float | None = None
    """Cutoff of the EMA the clipped actions pass through before they become joint targets (ANCHORS §3:
    5 Hz); None: unfiltered, as the committed bundle was trained. The bundle carries its alpha."""
    apex_gain_criterion_m: float = 0.15
    """Apex gain an in-place jump needs to count towards info['episode']['upward_criterion_rate'] [m]."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    shaping: RewardShapingConfig = field(default_factory=RewardShapingConfig)
    termination: TerminationConfig = field(default_factory=TerminationConfig)
    randomisation: RandomisationConfig = field(default_factory=RandomisationConfig)
    robot: A1Config = field(default_factory=A1Config)
    simulator: Literal["mujoco", "pybullet"] = "mujoco"
    """Physics backend: MuJoCo for training; pybullet (robots stepped one by one in Python, no domain
    randomisation) to check a MuJoCo-trained policy in a second simulator (sim-to-sim)."""
    init_joint_noise_rad: float = 0.0
    """Each episode starts with every joint off the standing pose by a uniform offset in +-this, drawn
    from the env's generator (so the same seed gives the same starts in either simulator). Evaluations
    use it: a deterministic policy on a nominal robot otherwise flies one identical episode N times."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init_joint_noise_rad < 0:
            raise ValueError(f"init_joint_noise_rad must be >= 0, got {self.init_joint_noise_rad}")
        if self.simulator not in ("mujoco", "pybullet"):
            raise ValueError(f"simulator must be 'mujoco' or 'pybullet', got {self.simulator!r}")
        if self.num_envs < 1 or self.upward_episode_s <= 0 or self.forward_episode_s <= 0:
            raise ValueError(
                f"need num_envs >= 1 and positive episode lengths, got {self.num_envs}, "
                f"{self.upward_episode_s}, {self.forward_episode_s}"
            )


class QuadrupedJumpEnv:
    """A batch of A1 robots each jumping to its commanded landing pose, stepped together at 50 Hz."""

    observation_dim = OBSERVATION_DIM
    privileged_dim = PRIVILEGED_DIM
    action_dim = ACTION_DIM

    def __init__(self, config: QuadrupedJumpEnvConfig, device: str | torch.device = "cpu"):
        self.config = config
        self.num_envs = n = config.num_envs
        self.device = dev = torch.device(device)
        self.generator = torch.Generator(device=dev).manual_seed(config.seed)
        self.has_obstacles = config.curriculum.stage == "obstacle"
        mujoco_boxes = self.has_obstacles and config.simulator == "mujoco"
        sim_config = QuadrupedSimConfig(
            num_envs=n,
            num_threads=config.num_threads,
            # MuJoCo's obstacles differ per env, so each env needs its own model, as with randomisation
            # (pybullet's robots share one world, each box a body of its own).
            per_env_models=config.randomisation.enabled or mujoco_boxes,
            robot=dataclasses.replace(config.robot, obstacle=True) if self.has_obstacles else config.robot,
        )
        self.sim: QuadrupedSim | PybulletQuadrupedSim
        if config.simulator == "pybullet":
            from robotrl.envs.quadruped.pybullet_sim import PybulletQuadrupedSim

            self.sim = PybulletQuadrupedSim(sim_config)
        else:
            self.sim = QuadrupedSim(sim_config)
        robot = self.sim.robot
        self.dt = self.sim.policy_dt
        self.standing_height_m = robot.standing_height_m
        self.curriculum = JumpCurriculum(config.curriculum, n, dev)
        self.phases = JumpPhases(n, dev)

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(array, dtype=torch.float32, device=dev)

        self._default_pos = tensor(robot.config.standing_joint_pos)
        self._joint_range = tensor(robot.joint_range)
        self._torque_limit = tensor(robot.torque_limit)
        self._action_gain = torch.ones(NUM_JOINTS, device=dev)
        self._action_gain[0::3] = config.hip_action_scale
        self.action_filter_alpha = ema_alpha(config.action_filter_hz, 1.0 / self.dt)
        self._filtered_action = torch.zeros(n, ACTION_DIM, device=dev)
        self._leg_offsets = tensor(_leg_offsets(self.sim))
        self._start_pos = tensor(robot.standing_qpos[robot.base_qpos_adr : robot.base_qpos_adr + 3])
        self._nominal_mass = float(robot.model.body_mass[robot.trunk_body_id])

        self.command = torch.zeros(n, COMMAND_DIM, device=dev)
        self.target_pos_w = torch.zeros(n, 3, device=dev)
        self.target_yaw = torch.zeros(n, device=dev)
        self.max_episode_steps = torch.zeros(n, dtype=torch.long, device=dev)
        self.episode_step = torch.zeros(n, dtype=torch.long, device=dev)
        self.episode_level = torch.zeros(n, dtype=torch.long, device=dev)
        self.previous_action = torch.zeros(n, ACTION_DIM, device=dev)
        max_delay = config.randomisation.action_delay_steps[1] if config.randomisation.enabled else 0
        self._action_history = torch.zeros(n, max_delay + 1, ACTION_DIM, device=dev)
        self.max_height = torch.zeros(n, device=dev)
        self.landing_pos_w = torch.zeros(n, 3, device=dev)
        self.landing_error_m = torch.zeros(n, device=dev)
        self.randomisation = torch.zeros(n, 5, device=dev)
        self.randomisation[:, 1:4] = torch.tensor([config.robot.foot_friction, 1.0, 1.0], device=dev)
        self._weights = {f.name: getattr(config.reward, f.name) for f in dataclasses.fields(RewardConfig)}
        self.episode_sums = {name: torch.zeros(n, device=dev) for name in self._weights}
        # A robot after one step standing at zero action: what a reset env reports until it steps.
        self._state = self._to_torch(self.sim.step(np.zeros((n, NUM_JOINTS))))
        self._standing = {
            f.name: getattr(self._state, f.name)[0].clone() for f in dataclasses.fields(QuadrupedState)
        }
        self.reset_idx(torch.arange(n, device=dev))

    # ----------------------------------------------------------------------------------- reset
    def reset(self, seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            self.generator.manual_seed(seed)
        self.reset_idx(torch.arange(self.num_envs, device=self.device))
        return self.observe()

    def reset_idx(self, env_ids: torch.Tensor) -> None:
        """Stand env_ids at the origin with a new command from their curriculum level."""
        if env_ids.numel() == 0:
            return
        if (self.curriculum.stage == "obstacle") != self.has_obstacles:
            raise ValueError(
                "the obstacle stage needs an env built for it (obstacle boxes in its model): make a new env "
                "with curriculum.stage 'obstacle' rather than switching stages"
            )
        cfg = self.config
        ids_np = env_ids.cpu().numpy()
        self.sim.reset_idx(ids_np, qpos=self._initial_qpos(env_ids.numel()))
        command = self.curriculum.sample(env_ids, self.generator)
        self.command[env_ids] = command
        self.target_pos_w[env_ids] = self._start_pos + command[:, LANDING_POS]
        self.target_yaw[env_ids] = _yaw(command[:, LANDING_QUAT])
        if self.has_obstacles:
            centre = command[:, OBSTACLE_CENTRE].clone()
            centre[:, 0:2] += self._start_pos[0:2]
            self.sim.set_obstacles(ids_np, centre.cpu().numpy(), command[:, OBSTACLE_SIZE].cpu().numpy())
        horizontal = (command[:, 0:2].norm(dim=-1) > 0) | (command[:, OBSTACLE_SIZE].norm(dim=-1) > 0)
        length_s = torch.where(horizontal, cfg.forward_episode_s, cfg.upward_episode_s)
        self.max_episode_steps[env_ids] = torch.round(length_s / self.dt).long()
        self.episode_level[env_ids] = self.curriculum.level[env_ids]
        self.episode_step[env_ids] = 0
        self.previous_action[env_ids] = 0.0
        self._action_history[env_ids] = 0.0
        self._filtered_action[env_ids] = 0.0
        self.max_height[env_ids] = self.standing_height_m
        self.landing_pos_w[env_ids] = 0.0
        self.landing_error_m[env_ids] = 0.0
        self.phases.reset_idx(env_ids)
        for total in self.episode_sums.values():
            total[env_ids] = 0.0
        if cfg.randomisation.enabled:
            self._randomise(env_ids, ids_np)
        for name, value in self._standing.items():
            getattr(self._state, name)[env_ids] = value

    def _initial_qpos(self, n: int) -> np.ndarray | None:
        """Standing poses [n, nq] with the configured joint offsets (None: the standing keyframe)."""
        noise = self.config.init_joint_noise_rad
        if noise == 0:
            return None
        robot = self.sim.robot
        offsets = (2 * torch.rand(n, NUM_JOINTS, generator=self.generator, device=self.device) - 1) * noise
        qpos = np.tile(robot.standing_qpos, (n, 1))
        qpos[:, robot.joint_qpos_adr] += offsets.cpu().numpy()
        return qpos

    def _randomise(self, env_ids: torch.Tensor, ids_np: np.ndarray) -> None:
        rand, n, g, dev = self.config.randomisation, env_ids.numel(), self.generator, self.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=g, device=dev)

        mass = uniform(*rand.added_mass_kg)
        friction = uniform(*rand.foot_friction)
        kp_scale = uniform(1.0 - rand.pd_gain_scale, 1.0 + rand.pd_gain_scale)
        kd_scale = uniform(1.0 - rand.pd_gain_scale, 1.0 + rand.pd_gain_scale)
        low, high = rand.action_delay_steps
        delay = torch.randint(low, high + 1, (n,), generator=g, device=dev).float()
        self.randomisation[env_ids] = torch.stack((mass, friction, kp_scale, kd_scale, delay), dim=-1)
        robot = self.config.robot
        self.sim.set_trunk_mass(ids_np, self._nominal_mass + mass.cpu().numpy())
        self.sim.set_foot_friction(ids_np, friction.cpu().numpy())
        self.sim.set_pd_gains(ids_np, robot.kp * kp_scale.cpu().numpy(), robot.kd * kd_scale.cpu().numpy())
        low_ratio, high_ratio = rand.impratio
        if low_ratio < high_ratio:
            log_ratio = uniform(math.log(low_ratio), math.log(high_ratio))
            self.sim.set_impratio(ids_np, log_ratio.exp().cpu().numpy())

    # ----------------------------------------------------------------------------------- step
    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, object]]:
        """Apply actions [N, 12]; returns (obs, reward, terminated, truncated, info)."""
        if action.shape != (self.num_envs, ACTION_DIM):
            raise ValueError(
                f"action must have shape ({self.num_envs}, {ACTION_DIM}), got {tuple(action.shape)}"
            )
        # A non-finite action ends that env's episode only; it stands still for its last step.
        bad_action = ~torch.isfinite(action).all(-1)
        clip = self.config.action_clip
        action = torch.where(bad_action.unsqueeze(-1), 0.0, action.to(self.device)).clamp(-clip, clip)
        # lerp: exactly the action at alpha 1 (unfiltered)
        self._filtered_action = torch.lerp(self._filtered_action, action, self.action_filter_alpha)
        self._action_history = torch.roll(self._action_history, 1, dims=1)
        self._action_history[:, 0] = self._filtered_action
        delay = self.randomisation[:, 4].long().clamp_max(self._action_history.shape[1] - 1)
        applied = self._action_history[torch.arange(self.num_envs, device=self.device), delay]
        state = self._to_torch(self.sim.step((applied * self._action_gain).cpu().numpy()))
        self._state = state
        self.episode_step += 1

        was_landed = self.phases.has_landed.clone()
        landed_now = self.phases.update(state.foot_contact)
        first_landing = landed_now & ~was_landed
        height = state.base_pos_w[:, 2]
        rise = torch.where(was_landed, 0.0, (height - self.max_height).clamp_min(0.0))
        self.max_height += rise
        error = (state.base_pos_w[:, 0:2] - self.target_pos_w[:, 0:2]).norm(dim=-1)
        self.landing_pos_w[first_landing] = state.base_pos_w[first_landing]
        self.landing_error_m = torch.where(first_landing, error, self.landing_error_m)

        reasons = self._termination_reasons(state, error, bad_action)
        terminated = torch.stack(list(reasons.values()), dim=-1).any(-1)
        truncated = (self.episode_step >= self.max_episode_steps) & ~terminated
        terms = self._terms(state, action, rise, error, first_landing, terminated)
        reward = torch.zeros(self.num_envs, device=self.device)
        for name, value in terms.items():
            weighted = self.dt * self._weights[name] * value
            reward += weighted
            self.episode_sums[name] += weighted
        self.previous_action = action

        success = truncated & self.phases.has_landed & (error <= self.config.termination.max_landing_error_m)
        info: dict[str, object] = {
            "time_outs": truncated,
            "nonfinite": reasons["nonfinite"],
            "success": success,
            "phase": {
                "in_flight": self.phases.in_flight.clone(),
                "has_jumped": self.phases.has_jumped.clone(),
                "has_landed": self.phases.has_landed.clone(),
                "landed": first_landing,
            },
        }
        obs = self.observe()
        done = terminated | truncated
        if done.any():
            ids = done.nonzero().squeeze(-1)
            info["final_obs"] = obs.clone()
            info["final_privileged_obs"] = self.privileged_observation()
            info["episode"] = self._episode_stats(ids, success, reasons)
            info["final"] = {
                "apex_gain_m": self.max_height - self.standing_height_m,
                "landing_error_m": self.landing_error_m.clone(),
                "has_landed": self.phases.has_landed.clone(),
                "landing_pos_rel_m": self.landing_pos_w - self._start_pos,
            }
            self.curriculum.update(ids, success[ids])
            info["episode"].update(self.curriculum.summary())
            self.reset_idx(ids)
            obs = self.observe()
        info["privileged_obs"] = self.privileged_observation()
        return obs, reward, terminated, truncated, info

    def _to_torch(self, state: QuadrupedState) -> QuadrupedState:
        """The sim's numpy batch as float32 (bool for contacts) tensors on the env's device."""

        def tensor(array: np.ndarray) -> torch.Tensor:
            dtype = torch.bool if array.dtype == np.bool_ else torch.float32
            return torch.tensor(array, dtype=dtype, device=self.device)

        return QuadrupedState(**{f.name: tensor(getattr(state, f.name)) for f in dataclasses.fields(state)})

    def _termination_reasons(
        self, state: QuadrupedState, error: torch.Tensor, bad_action: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Each cause of termination [N] bool (logged as info['episode']['termination/<cause>'])."""
        cfg, landed = self.config.termination, self.phases.has_landed
        yaw_error = _wrap(_yaw(state.base_quat_wxyz) - self.target_yaw).abs()
        drift = (state.base_pos_w[:, 0:2] - self.landing_pos_w[:, 0:2]).norm(dim=-1)
        return {
            "landing_error": landed & (error > cfg.max_landing_error_m),
            "landing_yaw": landed & (yaw_error > cfg.max_landing_yaw_error_rad),
            "post_landing_drift": landed & (drift > cfg.max_post_landing_drift_m),
            "base_height": state.base_pos_w[:, 2] < cfg.min_base_height_m,
            "trunk_contact": state.trunk_contact,
            "nonfinite": state.nonfinite | bad_action,
        }

    # ----------------------------------------------------------------------------------- rewards
    def _terms(
        self,
        state: QuadrupedState,
        action: torch.Tensor,
        rise: torch.Tensor,
        error: torch.Tensor,
        first_landing: torch.Tensor,
        terminated: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Each named term [N], unweighted and keyed like RewardConfig."""
        shaping, phases = self.config.shaping, self.phases
        landed, before_landing = phases.has_landed.float(), (~phases.has_landed).float()
        position = torch.exp(-(error**2) / shaping.position_sigma_m2)
        orientation_error = _angle_between(state.base_quat_wxyz, self.command[:, LANDING_QUAT])
        orientation = torch.exp(-(orientation_error**2) / shaping.orientation_sigma_rad2)
        velocity_error = ((state.base_linvel_w[:, 0:2] - self._takeoff_velocity()) ** 2).sum(-1)
        q, qd = state.joint_pos, state.joint_vel
        pose_error = ((q - self._default_pos) ** 2).sum(-1)
        lift = (state.base_pos_w[:, 2] - self.standing_height_m).clamp_min(0.0)
        return {
            "task_position": first_landing * position,
            "task_distance": first_landing * (torch.exp(-(error**2) / shaping.distance_sigma_m2) - position),
            "task_orientation": first_landing * orientation,
            "max_height": rise,
            "jumping_bonus": first_landing * (self.max_height > shaping.bonus_height_m),
            "termination": terminated.float(),
            "post_landing_position": landed * position,
            "post_landing_orientation": landed * orientation,
            "flight_base_height": phases.in_flight * lift,
            "linvel_tracking": before_landing * torch.exp(-velocity_error / shaping.velocity_sigma_m2ps2),
            "default_pose": landed * torch.exp(-pose_error / shaping.pose_sigma_rad2),
            "feet_distance": self._feet_distance_shortfall(q),
            "symmetry": _mirror_error(q),
            "contact_forces": (state.foot_force_n - shaping.max_contact_force_n).clamp_min(0.0).sum(-1),
            "action_rate": ((action - self.previous_action) ** 2).sum(-1),
            "joint_limits": self._soft_limit_excess(q),
            "energy": (self._torque(state) * qd).abs().sum(-1),
        }

    def _feet_distance_shortfall(self, joint_pos: torch.Tensor) -> torch.Tensor:
        """How far the front and the rear feet are laterally closer than min_feet_distance_m, summed [N]."""
        feet_y = _foot_positions_b(joint_pos, self._leg_offsets)[..., 1]  # LEGS order: FR, FL, RR, RL
        spacing = torch.stack((feet_y[:, 1] - feet_y[:, 0], feet_y[:, 3] - feet_y[:, 2]), dim=-1)
        return (self.config.shaping.min_feet_distance_m - spacing).clamp_min(0.0).sum(-1)

    def _soft_limit_excess(self, joint_pos: torch.Tensor) -> torch.Tensor:
        low, high = self._joint_range.unbind(-1)
        half_range = 0.5 * self.config.shaping.soft_joint_limit * (high - low)
        return ((joint_pos - 0.5 * (low + high)).abs() - half_range).clamp_min(0.0).sum(-1)

    def _torque(self, state: QuadrupedState) -> torch.Tensor:
        """The PD torque [N, 12] at the step's end state, with each env's (randomised) gains [N m]."""
        kp = self.config.robot.kp * self.randomisation[:, 2:3]
        kd = self.config.robot.kd * self.randomisation[:, 3:4]
        torque = kp * (state.joint_target - state.joint_pos) - kd * state.joint_vel
        return torque.clamp(-self._torque_limit, self._torque_limit)

    def _takeoff_velocity(self) -> torch.Tensor:
        """Horizontal velocity [N, 2] that covers the landing offset in a flight of the planned apex gain."""
        flight_s = 2.0 * math.sqrt(2.0 * self.config.shaping.planned_apex_gain_m / GRAVITY)
        return self.command[:, 0:2] / flight_s

    # ----------------------------------------------------------------------------------- logging
    def _episode_stats(
        self, ids: torch.Tensor, success: torch.Tensor, reasons: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        """Means over the episodes that just ended (keys for TensorBoard under episode/)."""
        won, gain = success[ids].float(), self.max_height[ids] - self.standing_height_m
        stats = {f"reward/{k}": v[ids].mean().item() for k, v in self.episode_sums.items()}
        stats["success_rate"] = won.mean().item()
        stats["apex_gain_m_mean"] = gain.mean().item()
        stats["episode_length_s"] = (self.episode_step[ids].float() * self.dt).mean().item()
        stats.update({f"termination/{k}": v[ids].float().mean().item() for k, v in reasons.items()})
        landed = self.phases.has_landed[ids]
        if landed.any():
            stats["landing_error_m_mean"] = self.landing_error_m[ids][landed].mean().item()
        upward = self.command[ids, 0:2].norm(dim=-1) == 0
        if upward.any():
            met = won.bool() & (gain >= self.config.apex_gain_criterion_m)
            stats["upward_criterion_rate"] = met[upward].float().mean().item()
        levels = self.episode_level[ids]
        for level in levels.unique().tolist():
            stats[f"level_{level:02d}/success_rate"] = won[levels == level].mean().item()
        return stats

    # ----------------------------------------------------------------------------------- observe
    def observe(self) -> torch.Tensor:
        """The policy observation [N, OBSERVATION_DIM], OBSERVATION_FIELDS order."""
        s = self._state
        gravity = torch.tensor([0.0, 0.0, -1.0], device=self.device).expand(self.num_envs, 3)
        return torch.cat(
            (
                _rotate_inverse(s.base_quat_wxyz, gravity),
                s.base_angvel_b,
                s.joint_pos - self._default_pos,
                s.joint_vel,
                self.previous_action,
                self.command,
                self.phases.has_jumped.float().unsqueeze(-1),
                (self.episode_step.float() * self.dt).unsqueeze(-1),
            ),
            dim=-1,
        )

    def privileged_observation(self) -> torch.Tensor:
        """The policy observation plus PRIVILEGED_FIELDS [N, PRIVILEGED_DIM]."""
        s = self._state
        return torch.cat(
            (
                self.observe(),
                _rotate_inverse(s.base_quat_wxyz, s.base_linvel_w),
                s.base_pos_w[:, 2:3],
                s.foot_contact.float(),
                self.target_pos_w - s.base_pos_w,
                (self.max_height - self.standing_height_m).unsqueeze(-1),
                self.phases.has_landed.float().unsqueeze(-1),
                self.randomisation,
            ),
            dim=-1,
        )

    def state_dict(self) -> dict[str, object]:
        """What a resumed training run needs back: each env's curriculum level."""
        return {"curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.curriculum.load_state_dict(state["curriculum"])  # type: ignore[arg-type]

    def close(self) -> None:
        self.sim.close()


# --------------------------------------------------------------------------------------- geometry
def _mirror_error(joint_pos: torch.Tensor) -> torch.Tensor:
    """Squared difference of each right leg from its mirrored left leg [N]: hips mirror by sign."""
    legs = joint_pos.view(-1, len(LEGS), 3)
    right, left = legs[:, 0::2], legs[:, 1::2]  # FR, RR against FL, RL
    hip = right[..., 0] + left[..., 0]
    knee_thigh = right[..., 1:] - left[..., 1:]
    return (hip**2).sum(-1) + (knee_thigh**2).sum((-1, -2))


def _rotate_inverse(quat_wxyz: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate world vectors v [N, 3] into the body frame of quat_wxyz [N, 4] (body to world)."""
    w, xyz = quat_wxyz[:, :1], quat_wxyz[:, 1:]
    t = 2.0 * torch.linalg.cross(xyz, v)
    return v - w * t + torch.linalg.cross(xyz, t)


def _yaw(quat_wxyz: torch.Tensor) -> torch.Tensor:
    w, x, y, z = quat_wxyz.unbind(-1)
    return torch.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    return torch.remainder(angle + math.pi, 2.0 * math.pi) - math.pi


def _angle_between(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """Rotation angle [N] between two orientations [N, 4] (sign of either quaternion ignored)."""
    dot = (q1 * q2).sum(-1).abs() / (q1.norm(dim=-1) * q2.norm(dim=-1))
    return 2.0 * torch.acos(dot.clamp(max=1.0))


def _leg_offsets(sim: QuadrupedSim) -> np.ndarray:
    """Per leg [4, 4, 3]: the hip, thigh, calf and foot body positions in their parents. The chain
    trunk -x-> hip -y-> thigh -y-> calf is checked, so a changed model fails here, not in a reward."""
    model, robot = sim.robot.model, sim.robot
    offsets = np.zeros((len(LEGS), 4, 3))
    for leg, foot in enumerate(robot.foot_body_ids):
        chain = [int(foot)]
        for _ in range(3):
            chain.append(int(model.body_parentid[chain[-1]]))
        hip, thigh, calf, foot_id = reversed(chain)
        axes = [model.jnt_axis[model.body_jntadr[b]] for b in (hip, thigh, calf)]
        if model.body_parentid[hip] != robot.trunk_body_id or not np.allclose(
            axes, [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
        ):
            raise ValueError(f"leg {LEGS[leg]}: expected trunk -> hip (x) -> thigh (y) -> calf (y) joints")
        if not np.allclose(model.body_quat[[hip, thigh, calf, foot_id]], [1, 0, 0, 0]):
            raise ValueError(f"leg {LEGS[leg]}: body frames must be aligned with the trunk")
        offsets[leg] = model.body_pos[[hip, thigh, calf, foot_id]]
    return offsets


def _foot_positions_b(joint_pos: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Foot positions [N, 4, 3] in the trunk frame from joint angles [N, 12] (forward kinematics)."""
    q = joint_pos.view(-1, len(LEGS), 3)
    p = offsets[:, 3].expand(q.shape[0], -1, -1)
    p = offsets[:, 2] + _rotate_y(q[..., 2], p)
    p = offsets[:, 1] + _rotate_y(q[..., 1], p)
    c, s = torch.cos(q[..., 0]), torch.sin(q[..., 0])
    x, y, z = p.unbind(-1)
    return offsets[:, 0] + torch.stack((x, c * y - s * z, s * y + c * z), dim=-1)


def _rotate_y(angle: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    x, y, z = v.unbind(-1)
    return torch.stack((c * x + s * z, y, -s * x + c * z), dim=-1)
