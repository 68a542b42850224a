"""The quadruped simulator in pybullet, for sim-to-sim checks of policies trained in MuJoCo (sim.py).

Same interface, state and units as QuadrupedSim, from the same URDF and the same constants: the MuJoCo
A1Model (model.py) gives the standing pose, joint ranges, torque limits, gains, friction and time step,
so the two backends cannot drift apart in what they are told. This backend is for evaluation, not
training: pybullet's API is per body, so every physics step loops over the robots in Python, and there
is no domain randomisation (per_env_models is refused).

All robots live in one DIRECT world of their own (several instances can coexist), each on its own grid
cell; robots collide only with the floor and their own cell's obstacle box (set_obstacles), never with
each other or themselves, and states are reported relative to each robot's cell, so every env starts
where MuJoCo's do. As in the MuJoCo model only the feet and the trunk touch the floor. The PD law is
computed here each physics step and applied as TORQUE_CONTROL, with pybullet's default velocity motors
switched off.

Kept the same as the MuJoCo model: URDF masses and inertias (the MuJoCo model drops five 1 g
placeholder links, so pybullet's robot is 5 g heavier), zero joint damping, friction and armature, no
body damping (pybullet's default 0.04 linear and angular damping is removed), foot-floor friction
A1Config.foot_friction and trunk-floor friction 1, sliding only (MuJoCo's condim 3 ignores torsional
and rolling friction). Differing, and not mirrored:
- contacts: Bullet's hard contacts with error reduction, against MuJoCo's soft ones (solref 0.02 s),
  so feet sink less and impacts are sharper (both approximate the friction cone by a pyramid);
- integration: semi-implicit Euler with the PD damping explicit, against MuJoCo's implicitfast, which
  treats the actuators' damping implicitly;
- non-finite physics is detected from the state only (MuJoCo also resets at its divergence limits).
"""

from __future__ import annotations

import math

import numpy as np
import pybullet as p

from robotrl.envs.quadruped.model import (
    JOINT_NAMES,
    LEGS,
    NUM_JOINTS,
    A1Model,
    build_a1,
    link_name,
    urdf_path,
)
from robotrl.envs.quadruped.sim import QuadrupedSimConfig, QuadrupedState, joint_targets

_GRID_SPACING_M = 2.0
"""Distance between neighbouring robots' origins [m]. Robots cannot collide anyway (collision groups); the
spacing keeps each robot's floor contacts apart from its neighbours' and the world easy to read."""
_ROBOT_GROUP, _FLOOR_GROUP = 1, 2
"""Collision filter groups: robot links collide with the floor and the boxes only, so robots never touch
each other (a box sits in its robot's cell, out of reach of the others)."""
_TRUNK_LINK = -1
"""pybullet's index of the base link, the URDF's root (checked to be the trunk)."""
_TRUNK_FRICTION = 1.0
"""MuJoCo's default geom friction, which the trunk keeps; the floor is 1 in both sims."""


class PybulletQuadrupedSim:
    """A batch of A1 robots in one pybullet world, stepped at the policy rate like QuadrupedSim."""

    def __init__(self, config: QuadrupedSimConfig):
        if config.per_env_models:
            raise ValueError(
                "PybulletQuadrupedSim is for evaluation without domain randomisation: it has no per-env "
                "models, so set per_env_models=False (randomisation disabled)"
            )
        self.config = config
        self.num_envs = n = config.num_envs
        self.robot: A1Model = build_a1(config.robot)
        self.physics_dt = float(self.robot.model.opt.timestep)
        self.policy_dt = config.decimation * self.physics_dt
        self._client = c = p.connect(p.DIRECT)
        p.setGravity(*self.robot.model.opt.gravity, physicsClientId=c)
        p.setTimeStep(self.physics_dt, physicsClientId=c)
        self._floor = p.createMultiBody(
            0.0, p.createCollisionShape(p.GEOM_PLANE, physicsClientId=c), physicsClientId=c
        )
        p.changeDynamics(self._floor, -1, lateralFriction=1.0, physicsClientId=c)
        p.setCollisionFilterGroupMask(self._floor, -1, _FLOOR_GROUP, _ROBOT_GROUP, physicsClientId=c)

        side = math.ceil(math.sqrt(n))
        self._origins = np.array([[i % side, i // side, 0.0] for i in range(n)]) * _GRID_SPACING_M
        # URDF inertias as given (pybullet would otherwise derive them from the collision shapes);
        # self-collision stays off, pybullet's default without URDF_USE_SELF_COLLISION.
        self._bodies = [
            p.loadURDF(urdf_path(), origin.tolist(), flags=p.URDF_USE_INERTIA_FROM_FILE, physicsClientId=c)
            for origin in self._origins
        ]
        self._joint_ids, self._foot_links = self._index_links(self._bodies[0])
        for body in self._bodies:
            self._configure(body)
        # pybullet's base pose is the trunk's inertial frame; MuJoCo's free joint is the trunk's link frame.
        local_pos, local_orn = p.getDynamicsInfo(self._bodies[0], _TRUNK_LINK, physicsClientId=c)[3:5]
        self._inertial_in_link = (local_pos, local_orn)
        self._link_in_inertial = p.invertTransform(local_pos, local_orn)
        # Floor contact -> (env, column): columns 0-3 the feet in LEGS order, 4 the trunk.
        columns = {**{link: k for k, link in enumerate(self._foot_links)}, _TRUNK_LINK: len(LEGS)}
        self._contact_slot = {
            (body, link): (env, col) for env, body in enumerate(self._bodies) for link, col in columns.items()
        }
        self._boxes: dict[int, int] = {}
        """env -> its obstacle box body, for the envs that have one now."""
        self._box_shapes: dict[tuple[float, ...], int] = {}
        """Box collision shapes by half extents: Bullet keeps a shape for good once a body used it (it
        refuses to remove it, measured), so each size is made once and reused."""
        self.reset_idx(np.arange(n))

    def _index_links(self, body: int) -> tuple[list[int], list[int]]:
        """pybullet joint indices in JOINT_NAMES order and foot link indices in LEGS order, by name (the
        URDF's upper/lower/toe renamed as model.py does), so a reordered URDF cannot swap joints."""
        root = p.getBodyInfo(body, physicsClientId=self._client)[0].decode()
        if root != "trunk":
            raise ValueError(f"expected the URDF's root link to be the trunk, got {root!r}")
        joints, links = {}, {}
        for j in range(p.getNumJoints(body, physicsClientId=self._client)):
            info = p.getJointInfo(body, j, physicsClientId=self._client)
            if info[2] == p.JOINT_REVOLUTE:
                joints[link_name(info[1].decode())] = j
            links[link_name(info[12].decode())] = j
        if sorted(joints) != sorted(JOINT_NAMES):
            raise ValueError(f"the URDF's revolute joints {sorted(joints)} are not JOINT_NAMES")
        return [joints[name] for name in JOINT_NAMES], [links[f"{leg}_foot"] for leg in LEGS]

    def _configure(self, body: int) -> None:
        """Floor-only contacts for the feet and trunk, MuJoCo's friction, no damping, no default motors."""
        c, cfg = self._client, self.robot.config
        p.changeDynamics(body, _TRUNK_LINK, linearDamping=0.0, angularDamping=0.0, physicsClientId=c)
        touching = {_TRUNK_LINK, *self._foot_links}
        for link in range(_TRUNK_LINK, p.getNumJoints(body, physicsClientId=c)):
            group, mask = (_ROBOT_GROUP, _FLOOR_GROUP) if link in touching else (0, 0)
            p.setCollisionFilterGroupMask(body, link, group, mask, physicsClientId=c)
            friction = cfg.foot_friction if link in self._foot_links else _TRUNK_FRICTION
            p.changeDynamics(body, link, lateralFriction=friction, jointDamping=0.0, physicsClientId=c)
        p.setJointMotorControlArray(
            body, self._joint_ids, p.VELOCITY_CONTROL, forces=[0.0] * NUM_JOINTS, physicsClientId=c
        )

    # ----------------------------------------------------------------------------------- reset
    def reset_idx(
        self, env_ids: np.ndarray, qpos: np.ndarray | None = None, qvel: np.ndarray | None = None
    ) -> None:
        """Put env_ids back to the standing pose at rest, or to qpos [len, nq] / qvel [len, nv] in the
        MuJoCo model's layout (as QuadrupedSim takes them: base position relative to the env's origin,
        quaternion wxyz; linear velocity world, angular body), so a state can be set in either sim alike."""
        env_ids = np.asarray(env_ids).reshape(-1)
        r = self.robot
        for k, env in enumerate(env_ids):
            q = r.standing_qpos if qpos is None else np.asarray(qpos[k], dtype=np.float64)
            v = np.zeros(r.model.nv) if qvel is None else np.asarray(qvel[k], dtype=np.float64)
            self._set_state(int(env), q, v)

    def _set_state(self, env: int, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """One robot to a MuJoCo-layout state, moved into pybullet's world grid cell and inertial frame."""
        c, body, r = self._client, self._bodies[env], self.robot
        base_q, base_v = r.base_qpos_adr, r.base_dof_adr
        link_pos = qpos[base_q : base_q + 3] + self._origins[env]
        w, x, y, z = qpos[base_q + 3 : base_q + 7]
        com_pos, com_orn = p.multiplyTransforms(link_pos.tolist(), [x, y, z, w], *self._inertial_in_link)
        rotation = np.array(p.getMatrixFromQuaternion([x, y, z, w])).reshape(3, 3)
        angvel_w = rotation @ qvel[base_v + 3 : base_v + 6]
        com_linvel = qvel[base_v : base_v + 3] + np.cross(angvel_w, np.subtract(com_pos, link_pos))
        p.resetBasePositionAndOrientation(body, com_pos, com_orn, physicsClientId=c)
        p.resetBaseVelocity(body, com_linvel.tolist(), angvel_w.tolist(), physicsClientId=c)
        p.resetJointStatesMultiDof(
            body,
            self._joint_ids,
            [[angle] for angle in qpos[r.joint_qpos_adr]],
            [[rate] for rate in qvel[r.joint_dof_adr]],
            physicsClientId=c,
        )

    def set_obstacles(self, env_ids: np.ndarray, centre_w: np.ndarray, size: np.ndarray) -> None:
        """Place each env's obstacle box as QuadrupedSim does: centre [len, 3] relative to the env's origin,
        full extents [len, 3] [m]; a zero size removes the env's box. Bullet cannot resize a shape, so
        each placement makes a new static box body (friction 1, as the floor and MuJoCo's box)."""
        if self.robot.obstacle_geom_id < 0:
            raise ValueError("this A1 model has no obstacle box: build it with A1Config(obstacle=True)")
        c = self._client
        for env, centre, extent in zip(
            np.asarray(env_ids).reshape(-1), np.asarray(centre_w), np.asarray(size), strict=True
        ):
            old = self._boxes.pop(int(env), None)
            if old is not None:
                p.removeBody(old, physicsClientId=c)
            if not np.all(extent > 0):
                continue
            half = tuple(float(h) for h in 0.5 * extent)
            if half not in self._box_shapes:
                self._box_shapes[half] = p.createCollisionShape(
                    p.GEOM_BOX, halfExtents=half, physicsClientId=c
                )
            position = (centre + self._origins[env]).tolist()
            box = p.createMultiBody(0.0, self._box_shapes[half], basePosition=position, physicsClientId=c)
            p.changeDynamics(box, -1, lateralFriction=1.0, physicsClientId=c)
            p.setCollisionFilterGroupMask(box, -1, _FLOOR_GROUP, _ROBOT_GROUP, physicsClientId=c)
            self._boxes[int(env)] = box

    # ----------------------------------------------------------------------------------- step
    def step(self, action: np.ndarray) -> QuadrupedState:
        """Apply actions [N, 12] (JOINT_NAMES order, unitless) for one policy step."""
        target, bad_action = joint_targets(action, self.config, self.robot)
        kp, kd, limit = self.robot.config.kp, self.robot.config.kd, self.robot.torque_limit
        touch = np.zeros((self.num_envs, len(LEGS) + 1))
        for _ in range(self.config.decimation):
            q, qd = self._joint_states()
            torque = np.clip(kp * (target - q) - kd * qd, -limit, limit)
            for body, tau in zip(self._bodies, torque, strict=True):
                p.setJointMotorControlArray(
                    body, self._joint_ids, p.TORQUE_CONTROL, forces=tau.tolist(), physicsClientId=self._client
                )
            p.stepSimulation(physicsClientId=self._client)
            touch = np.maximum(touch, self._ground_forces())
        state = self._observe(target, touch, bad_action)
        if state.nonfinite.any():
            bad = np.flatnonzero(state.nonfinite)
            self.reset_idx(bad)
            touch[bad] = 0.0
            state = self._observe(target, touch, state.nonfinite)
        return state

    def _joint_states(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions and velocities [N, 12] each, JOINT_NAMES order."""
        states = np.array(
            [
                [s[:2] for s in p.getJointStates(body, self._joint_ids, physicsClientId=self._client)]
                for body in self._bodies
            ]
        )
        return states[..., 0], states[..., 1]

    def _ground_forces(self) -> np.ndarray:
        """Normal force of the floor and the boxes on each foot and the trunk [N, 5], summed over contact
        points (MuJoCo's touch sensors, too, count a foot on a box as a foot in contact)."""
        forces = np.zeros((self.num_envs, len(LEGS) + 1))
        for ground in (self._floor, *self._boxes.values()):
            for point in p.getContactPoints(bodyA=ground, physicsClientId=self._client):
                slot = self._contact_slot.get((point[2], point[4]))
                if slot is not None:
                    forces[slot] += point[9]
        return forces

    def _observe(self, target: np.ndarray, touch: np.ndarray, bad_action: np.ndarray) -> QuadrupedState:
        """The batch in QuadrupedState's frames: trunk link frame (not pybullet's inertial frame)."""
        c, n = self._client, self.num_envs
        pos, quat, linvel, angvel = (np.zeros((n, size)) for size in (3, 4, 3, 3))
        for env, body in enumerate(self._bodies):
            com_pos, com_orn = p.getBasePositionAndOrientation(body, physicsClientId=c)
            com_linvel, angvel_w = p.getBaseVelocity(body, physicsClientId=c)
            link_pos, (x, y, z, w) = p.multiplyTransforms(com_pos, com_orn, *self._link_in_inertial)
            rotation = np.array(p.getMatrixFromQuaternion([x, y, z, w])).reshape(3, 3)
            pos[env] = np.subtract(link_pos, self._origins[env])
            quat[env] = (w, x, y, z)
            linvel[env] = com_linvel + np.cross(angvel_w, np.subtract(link_pos, com_pos))
            angvel[env] = rotation.T @ angvel_w
        joint_pos, joint_vel = self._joint_states()
        arrays = (pos, quat, linvel, angvel, joint_pos, joint_vel)
        nonfinite = bad_action | ~np.isfinite(np.concatenate(arrays, axis=-1)).all(axis=-1)
        contact = touch > self.config.contact_threshold_n
        return QuadrupedState(
            base_pos_w=pos,
            base_quat_wxyz=quat,
            base_linvel_w=linvel,
            base_angvel_b=angvel,
            joint_pos=joint_pos,
            joint_vel=joint_vel,
            joint_target=target,
            foot_force_n=touch[:, : len(LEGS)],
            foot_contact=contact[:, : len(LEGS)],
            trunk_contact=contact[:, len(LEGS)],
            nonfinite=nonfinite,
        )

    def close(self) -> None:
        """Disconnect this sim's pybullet world."""
        p.disconnect(physicsClientId=self._client)
