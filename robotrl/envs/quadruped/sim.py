"""N quadrupeds stepped together by mujoco.rollout's persistent thread pool (the GIL is released).

One policy step is `decimation` physics steps at constant joint targets: one rollout call of that
many steps for the whole batch, so no Python runs per env or per physics step. The full physics state
of every env lives here between calls (rollout starts each call from given states). Contacts come
from touch sensors, the only per-env output of a rollout besides the state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import mujoco
import mujoco.rollout
import numpy as np

from robotrl.envs.quadruped.model import (
    LEGS,
    NUM_JOINTS,
    OBSTACLE_PARKED_HALF_SIZE_M,
    OBSTACLE_PARKED_POS_M,
    A1Config,
    A1Model,
    build_a1,
)


@dataclass
class QuadrupedSimConfig:
    num_envs: int = 1024
    num_threads: int = 2
    """Rollout worker threads; 1 steps on the calling thread."""
    decimation: int = 4
    """Physics steps per policy step: 4 x 5 ms = 50 Hz (ANCHORS §3)."""
    action_scale: float = 0.25
    """Joint target = default pose + action_scale * action [rad], clipped to the joint range."""
    contact_threshold_n: float = 1.0
    """A foot or the trunk is in contact when its normal force exceeds this [N]."""
    per_env_models: bool = False
    """One MjModel copy per env, so that masses, friction and gains can differ (domain randomisation)."""
    robot: A1Config = field(default_factory=A1Config)

    def __post_init__(self) -> None:
        if self.num_envs < 1 or self.num_threads < 1 or self.decimation < 1:
            raise ValueError(
                f"num_envs, num_threads and decimation must be >= 1, got {self.num_envs}, "
                f"{self.num_threads}, {self.decimation}"
            )


@dataclass
class QuadrupedState:
    """The batch after a policy step (numpy, float64, shapes [num_envs, ...]); arrays are the caller's."""

    base_pos_w: np.ndarray
    """[N, 3] trunk position in the world [m]."""
    base_quat_wxyz: np.ndarray
    """[N, 4] trunk orientation, body to world."""
    base_linvel_w: np.ndarray
    """[N, 3] trunk linear velocity, world frame [m/s]."""
    base_angvel_b: np.ndarray
    """[N, 3] trunk angular velocity, body frame [rad/s]."""
    joint_pos: np.ndarray
    """[N, 12] JOINT_NAMES order [rad]."""
    joint_vel: np.ndarray
    """[N, 12] [rad/s]."""
    joint_target: np.ndarray
    """[N, 12] the PD targets applied during the step, after clipping [rad]."""
    foot_force_n: np.ndarray
    """[N, 4] peak normal force on each foot (LEGS order) over the step's physics steps [N]."""
    foot_contact: np.ndarray
    """[N, 4] bool: the foot touched the floor in any physics step of the policy step."""
    trunk_contact: np.ndarray
    """[N] bool: the trunk touched the floor in any physics step."""
    nonfinite: np.ndarray
    """[N] bool: the action or the physics went non-finite (or past MuJoCo's divergence limits); that env
    was put back to standing."""


class QuadrupedSim:
    """A batch of A1 robots on flat ground, stepped at the policy rate.

    Touch sensors are read before each physics step's integration, so the contacts of a policy step
    cover the states from its start up to one physics step (5 ms) before the returned state. Each
    policy step starts the constraint solver cold (rollout zeroes its warm start), which is what makes
    an env's results independent of the batch and the thread that stepped it.
    """

    def __init__(self, config: QuadrupedSimConfig):
        self.config = config
        self.num_envs = config.num_envs
        self.robot: A1Model = build_a1(config.robot)
        model = self.robot.model
        if config.per_env_models:
            self.models = [copy.copy(model) for _ in range(self.num_envs)]
        else:
            self.models = [model] * self.num_envs
        self._data = [mujoco.MjData(model) for _ in range(config.num_threads)]
        self._rollout = mujoco.rollout.Rollout(nthread=config.num_threads if config.num_threads > 1 else 0)
        self.physics_dt = model.opt.timestep
        self.policy_dt = config.decimation * self.physics_dt

        # Columns of the full physics state (time, qpos, qvel; the A1 has no activations or mocap).
        full = mujoco.mjtState.mjSTATE_FULLPHYSICS.value
        state_size = mujoco.mj_stateSize(model, full)
        time_bit, qpos_bit = mujoco.mjtState.mjSTATE_TIME.value, mujoco.mjtState.mjSTATE_QPOS.value
        qpos0 = mujoco.mj_stateSize(model, time_bit)
        qvel0 = mujoco.mj_stateSize(model, time_bit | qpos_bit)
        base_q, base_v = qpos0 + self.robot.base_qpos_adr, qvel0 + self.robot.base_dof_adr
        self._time_col = 0
        self._qpos_cols = slice(qpos0, qpos0 + model.nq)
        self._qvel_cols = slice(qvel0, qvel0 + model.nv)
        self._base_pos_cols = np.arange(base_q, base_q + 3)
        self._base_quat_cols = np.arange(base_q + 3, base_q + 7)
        self._base_linvel_cols = np.arange(base_v, base_v + 3)
        self._base_angvel_cols = np.arange(base_v + 3, base_v + 6)
        self._joint_pos_cols = qpos0 + self.robot.joint_qpos_adr
        self._joint_vel_cols = qvel0 + self.robot.joint_dof_adr

        self._standing_state = np.zeros(state_size)
        self._standing_state[self._qpos_cols] = self.robot.standing_qpos
        n, steps = self.num_envs, config.decimation
        self._state = np.tile(self._standing_state, (n, 1))
        self._control = np.zeros((n, steps, model.nu))
        self._state_out = np.zeros((n, steps, state_size))
        self._sensor_out = np.zeros((n, steps, model.nsensordata))
        self._touch_adr = np.append(self.robot.foot_touch_adr, self.robot.trunk_touch_adr)

    # ----------------------------------------------------------------------------------- reset
    def reset_idx(
        self, env_ids: np.ndarray, qpos: np.ndarray | None = None, qvel: np.ndarray | None = None
    ) -> None:
        """Put env_ids back to the standing keyframe at time 0, or to qpos [len, nq] / qvel [len, nv]."""
        self._state[env_ids] = self._standing_state
        if qpos is not None:
            self._state[env_ids, self._qpos_cols] = qpos
        if qvel is not None:
            self._state[env_ids, self._qvel_cols] = qvel

    # ----------------------------------------------------------------------------------- step
    def step(self, action: np.ndarray) -> QuadrupedState:
        """Apply actions [N, 12] (JOINT_NAMES order, unitless) for one policy step."""
        target, bad_action = joint_targets(action, self.config, self.robot)
        self._control[:] = target[:, None, :]
        self._rollout.rollout(
            self.models,
            self._data,
            self._state,
            self._control,
            skip_checks=True,
            nstep=self.config.decimation,
            state=self._state_out,
            sensordata=self._sensor_out,
        )
        final = self._state_out[:, -1]
        # MuJoCo restarts a diverging simulation from the model's initial state, clock at 0, and rollout
        # then holds that state: a clock that did not advance by one policy step marks it like a NaN.
        expected_time = self._state[:, self._time_col] + self.policy_dt
        nonfinite = (
            bad_action
            | ~np.isfinite(final).all(axis=-1)
            | (np.abs(final[:, self._time_col] - expected_time) > 0.5 * self.physics_dt)
        )
        self._state[:] = final
        touch = self._sensor_out[:, :, self._touch_adr].max(axis=1)
        if nonfinite.any():
            self._state[nonfinite] = self._standing_state
            touch[nonfinite] = 0.0
        return self._observe(target, touch, nonfinite)

    def _observe(self, target: np.ndarray, touch: np.ndarray, nonfinite: np.ndarray) -> QuadrupedState:
        s = self._state
        contact = touch > self.config.contact_threshold_n
        num_feet = len(LEGS)
        return QuadrupedState(
            base_pos_w=s[:, self._base_pos_cols],
            base_quat_wxyz=s[:, self._base_quat_cols],
            base_linvel_w=s[:, self._base_linvel_cols],
            base_angvel_b=s[:, self._base_angvel_cols],
            joint_pos=s[:, self._joint_pos_cols],
            joint_vel=s[:, self._joint_vel_cols],
            joint_target=target,
            foot_force_n=touch[:, :num_feet],
            foot_contact=contact[:, :num_feet],
            trunk_contact=contact[:, num_feet],
            nonfinite=nonfinite,
        )

    # ----------------------------------------------------------------------------------- domain randomisation
    def set_trunk_mass(self, env_ids: np.ndarray, mass_kg: np.ndarray) -> None:
        """Trunk mass per env [kg] (inertia unchanged, like a payload at the centre of mass)."""
        for model, mass in zip(self._own_models(env_ids), np.asarray(mass_kg), strict=True):
            model.body_mass[self.robot.trunk_body_id] = mass

    def set_foot_friction(self, env_ids: np.ndarray, friction: np.ndarray) -> None:
        """Sliding friction of the four feet per env; it is the foot-floor friction (feet have priority)."""
        for model, mu in zip(self._own_models(env_ids), np.asarray(friction), strict=True):
            model.geom_friction[self.robot.foot_geom_ids, 0] = mu

    def set_impratio(self, env_ids: np.ndarray, impratio: np.ndarray) -> None:
        """Frictional-to-normal contact impedance ratio per env (A1Config.impratio): how far feet creep
        below their friction limit."""
        for model, ratio in zip(self._own_models(env_ids), np.asarray(impratio), strict=True):
            model.opt.impratio = ratio

    def set_pd_gains(self, env_ids: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> None:
        """PD gains per env [len] or per env and joint [len, 12] [N m/rad, N m s/rad]."""
        models = self._own_models(env_ids)
        for model, p, d in zip(models, _per_joint(kp, len(models)), _per_joint(kd, len(models)), strict=True):
            model.actuator_gainprm[:, 0] = p
            model.actuator_biasprm[:, 1] = -p
            model.actuator_biasprm[:, 2] = -d

    def set_obstacles(self, env_ids: np.ndarray, centre_w: np.ndarray, size: np.ndarray) -> None:
        """Place each env's obstacle box: centre [len, 3] in the world, full extents [len, 3] [m]; an env
        with a zero size gets none (its box is parked below the floor)."""
        box = self.robot.obstacle_geom_id
        if box < 0:
            raise ValueError("this A1 model has no obstacle box: build it with A1Config(obstacle=True)")
        for model, c, extent in zip(
            self._own_models(env_ids), np.asarray(centre_w), np.asarray(size), strict=True
        ):
            half = 0.5 * extent if np.all(extent > 0) else np.array(OBSTACLE_PARKED_HALF_SIZE_M)
            model.geom_pos[box] = c if np.all(extent > 0) else OBSTACLE_PARKED_POS_M
            model.geom_size[box] = half
            # The collision broad- and midphase use these bounds; a resized box must carry its own.
            model.geom_rbound[box] = float(np.linalg.norm(half))
            model.geom_aabb[box] = np.concatenate((np.zeros(3), half))

    def _own_models(self, env_ids: np.ndarray) -> list[mujoco.MjModel]:
        if not self.config.per_env_models:
            raise ValueError(
                "every env shares one model: set QuadrupedSimConfig(per_env_models=True) to change "
                "parameters per env"
            )
        return [self.models[i] for i in np.asarray(env_ids).reshape(-1)]

    def close(self) -> None:
        """Stop the rollout threads (also done when the simulator is garbage collected)."""
        self._rollout.close()


def joint_targets(
    action: np.ndarray, config: QuadrupedSimConfig, robot: A1Model
) -> tuple[np.ndarray, np.ndarray]:
    """Joint targets [N, 12] from actions [N, 12] (default pose + action_scale * action, clipped to the
    joint range; a non-finite row holds the default pose) and which rows were non-finite [N]. Both
    simulator backends map actions through this, so they cannot disagree on what an action means."""
    action = np.asarray(action, dtype=np.float64)
    if action.shape != (config.num_envs, NUM_JOINTS):
        raise ValueError(f"action must have shape ({config.num_envs}, {NUM_JOINTS}), got {action.shape}")
    bad_action = ~np.isfinite(action).all(axis=-1)
    target = robot.config.standing_joint_pos + config.action_scale * np.where(
        bad_action[:, None], 0.0, action
    )
    return np.clip(target, robot.joint_range[:, 0], robot.joint_range[:, 1]), bad_action


def _per_joint(values: np.ndarray, num_envs: int) -> np.ndarray:
    """[num_envs] or [num_envs, 12] -> [num_envs, 12]."""
    values = np.asarray(values, dtype=np.float64)
    return np.broadcast_to(values[:, None] if values.ndim == 1 else values, (num_envs, NUM_JOINTS))
