"""One simulated A1 behind the robot-backend interface, for the ROS 2 bridge: joint targets in, the measured
state out.

It steps the training simulator (a batch of one, on the calling thread) one control period at a time,
the targets held in between as motor drivers hold a command between packets. A NaN target damps its
joint (kp 0, kd the profile's damping_kd). Until the first target that is not damped arrives the robot
is held still in its standing pose, as on a stand, so a disarmed graph (every joint damped) does not
start with a collapse.
"""

from __future__ import annotations

import numpy as np

from robotrl.control.legged import JointProfile, LeggedState
from robotrl.envs.quadruped.model import JOINT_NAMES, LEGS, NUM_JOINTS, A1Config
from robotrl.envs.quadruped.sim import QuadrupedSim, QuadrupedSimConfig, QuadrupedState

FOOT_NAMES = tuple(f"{leg}_foot" for leg in LEGS)
_ENV = np.array([0])


class SimulatedQuadruped:
    def __init__(self, joints: JointProfile, period_s: float):
        if joints.names != JOINT_NAMES or joints.foot_names != FOOT_NAMES:
            raise ValueError(
                f"the simulated A1 has joints {list(JOINT_NAMES)} and feet {list(FOOT_NAMES)}; the robot "
                f"profile lists {list(joints.names)} and {list(joints.foot_names)}"
            )
        robot = A1Config(kp=joints.kp, kd=joints.kd)
        decimation = round(period_s / robot.timestep_s)
        if decimation < 1 or abs(decimation * robot.timestep_s - period_s) > 1e-9:
            raise ValueError(
                f"the control period {period_s} s must be a whole number of {robot.timestep_s} s "
                "physics steps"
            )
        self.joints = joints
        self.period_s = period_s
        self.sim = QuadrupedSim(
            QuadrupedSimConfig(
                num_envs=1, num_threads=1, decimation=decimation, per_env_models=True, robot=robot
            )
        )
        self._default = robot.standing_joint_pos
        self._action = np.zeros((1, NUM_JOINTS))
        self.damped = np.zeros(NUM_JOINTS, dtype=bool)
        """Which joints run damped (kp 0) rather than under PD."""
        self.truth: QuadrupedState = self.sim.step(self._action)
        """The simulator's full state after the last period (base position and velocity included)."""
        self.released = False
        self.time_s: float | None = None

    def command(self, action: np.ndarray) -> None:
        """Joint targets [12] [rad], JOINT_NAMES order; NaN damps the joint."""
        targets = np.asarray(action, np.float64).reshape(NUM_JOINTS)
        if np.isinf(targets).any():
            raise ValueError(f"infinite joint target in {targets.tolist()}")
        damped = np.isnan(targets)
        if not np.array_equal(damped, self.damped):
            self.damped = damped
            kp = np.where(damped, 0.0, self.joints.kp)
            kd = np.where(damped, self.joints.damping_kd, self.joints.kd)
            self.sim.set_pd_gains(_ENV, kp[None], kd[None])
        # The simulator takes actions around its standing pose; a damped joint's target has no effect.
        offset = np.where(damped, 0.0, targets - self._default)
        self._action[0] = offset / self.sim.config.action_scale
        self.released = self.released or not damped.all()

    def advance(self, now_s: float) -> LeggedState:
        """Step whole control periods up to now_s (once released), then report the state stamped now_s."""
        if self.time_s is None:
            self.time_s = now_s
        while self.time_s + self.period_s <= now_s + 1e-9:
            self.time_s += self.period_s
            if self.released:
                self.truth = self.sim.step(self._action)
        return self.state(now_s)

    def state(self, stamp_s: float) -> LeggedState:
        """What the robot's own sensors report of the last period: joints, IMU, foot forces."""
        t = self.truth
        return LeggedState(
            stamp_s=stamp_s,
            joint_pos=t.joint_pos[0].copy(),
            joint_vel=t.joint_vel[0].copy(),
            joint_torque=self._torque(),
            quat_wxyz=t.base_quat_wxyz[0].copy(),
            angular_velocity_b=t.base_angvel_b[0].copy(),
            foot_force_n=t.foot_force_n[0].copy(),
        )

    def _torque(self) -> np.ndarray:
        """The actuators' torque at the reported state: their PD (kp 0 where damped), clipped to the limit."""
        t, joints = self.truth, self.joints
        kp = np.where(self.damped, 0.0, joints.kp)
        kd = np.where(self.damped, joints.damping_kd, joints.kd)
        torque = kp * (t.joint_target[0] - t.joint_pos[0]) - kd * t.joint_vel[0]
        limit = self.sim.robot.torque_limit
        return np.clip(torque, -limit, limit)

    def push(self, linear_velocity_w: np.ndarray, angular_velocity_b: np.ndarray) -> None:
        """Fault injection (a kick): add to the trunk's velocity [m/s, world; rad/s, body]. A pushed robot
        is off its stand."""
        t, robot = self.truth, self.sim.robot
        qpos = robot.standing_qpos.copy()
        qpos[robot.base_qpos_adr : robot.base_qpos_adr + 3] = t.base_pos_w[0]
        qpos[robot.base_qpos_adr + 3 : robot.base_qpos_adr + 7] = t.base_quat_wxyz[0]
        qpos[robot.joint_qpos_adr] = t.joint_pos[0]
        qvel = np.zeros(robot.model.nv)
        qvel[robot.base_dof_adr : robot.base_dof_adr + 3] = t.base_linvel_w[0] + linear_velocity_w
        qvel[robot.base_dof_adr + 3 : robot.base_dof_adr + 6] = t.base_angvel_b[0] + angular_velocity_b
        qvel[robot.joint_dof_adr] = t.joint_vel[0]
        self.sim.reset_idx(_ENV, qpos[None], qvel[None])
        self.released = True

    def close(self) -> None:
        self.sim.close()
