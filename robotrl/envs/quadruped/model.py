"""The Unitree A1 as a MuJoCo model, built from pybullet_data's URDF with MjSpec (no download needed).

The URDF gives the kinematic tree, masses, inertias, joint ranges and torque limits. The meshes are
dropped (they are visuals only) and so are the hip, shoulder and leg collision primitives: only the
four foot spheres and the trunk box touch the floor, which keeps contacts few and the step fast.
The URDF's 1 g placeholder links (IMU, shoulder collision cylinders) go too: MuJoCo 3.3.0 does not fuse
static bodies in a model with actuators or sensors, and each extra body costs time in every step.
Added here: a free-joint base, a floor, PD position actuators, touch sensors that make foot and trunk
contact observable in batched rollouts, near-hard joint limits, and the standing pose as keyframe 0.
"""

from __future__ import annotations

import copy
import functools
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import mujoco
import numpy as np

LEGS = ("FR", "FL", "RR", "RL")
"""Leg order of every per-leg array (Unitree's order: front right, front left, rear right, rear left)."""
JOINTS_PER_LEG = ("hip", "thigh", "calf")
JOINT_NAMES = tuple(f"{leg}_{part}_joint" for leg in LEGS for part in JOINTS_PER_LEG)
"""The 12 actuated joints in the order of actions, targets and joint arrays."""
NUM_JOINTS = len(JOINT_NAMES)

_URDF_LINK_RENAMES = {"upper": "thigh", "lower": "calf", "toe": "foot"}
"""pybullet's A1 URDF says upper/lower/toe where Unitree's SDK and hardware say thigh/calf/foot."""
_CONTACT_SITE_MARGIN_M = 0.005
"""Touch sites are this much larger than the geom they watch, so contact points inside it count."""
OBSTACLE_PARKED_POS_M = (0.0, 0.0, -1.0)
OBSTACLE_PARKED_HALF_SIZE_M = (0.01, 0.01, 0.01)
"""Where the obstacle box waits when an episode has none: below the floor, which it does not collide with."""
_LIMIT_IMPEDANCE = (0.99, 0.999, 0.001, 0.5, 2.0)
"""solimp of the joint limits: near-hard stops. MuJoCo's default (0.9, 0.95) with its 0.02 s solref let a
jumping policy sink the calves 0.12-0.21 rad past their range in the crouch and spring back off the limit
at take-off (measured): energy that neither the robot's mechanical stops nor pybullet give back, worth
0.05 m of apex gain and a different pitch in flight. With these and a solref of two time steps (the
stiffest MuJoCo takes) the same crouch sinks 0.02-0.10 rad, as in pybullet (0.02-0.07)."""
_SETTLING_TIME_S = 2.0
_SETTLING_DAMPING = 5.0
"""Joint damping while the standing keyframe settles [N m s/rad], 10x the PD's kd."""


@dataclass(frozen=True)
class A1Config:
    """Physics settings of the model; hashable, so each distinct config is built once per process."""

    kp: float = 20.0
    """PD stiffness of every joint [N m/rad] (ANCHORS §3)."""
    kd: float = 0.5
    """PD damping of every joint [N m s/rad]."""
    timestep_s: float = 0.005
    """Physics step [s]; the policy runs every `decimation` of these (sim.py)."""
    foot_friction: float = 1.0
    """Sliding friction of the feet; feet have contact priority, so this is the foot-floor friction."""
    standing_hip_rad: float = 0.0
    standing_thigh_rad: float = 0.9
    standing_calf_rad: float = -1.5
    """Default joint targets, the same for every leg (action 0). These are targets, not the pose: at
    kp 20 the robot's weight bends the knees by about 0.2 rad, so it stands at about thigh 0.92, calf
    -1.7 with the base 0.27 m high. Targets of 0.8 / -1.6 tip it over backwards within a second
    (measured); the stance at this stiffness is a narrow basin, so change them with the standing test."""
    impratio: float = 1.0
    """MuJoCo's frictional-to-normal impedance ratio: at 1 a foot pushed at 60% of its friction limit
    creeps 4 mm/s under the pyramidal cone, at 10 0.4 mm/s (measured on a 1 kg box); pybullet's
    contacts do not creep."""
    obstacle: bool = False
    """Add one static box (geom 'obstacle') that the feet and the trunk collide with, as the floor; it is
    parked below the floor until the simulator places it (QuadrupedSim.set_obstacles)."""

    def __post_init__(self) -> None:
        if self.kp <= 0 or self.kd < 0 or self.timestep_s <= 0 or self.foot_friction < 0 or self.impratio < 1:
            raise ValueError(
                f"need kp > 0, kd >= 0, timestep_s > 0, foot_friction >= 0, impratio >= 1; got "
                f"kp={self.kp}, kd={self.kd}, timestep_s={self.timestep_s}, "
                f"foot_friction={self.foot_friction}, impratio={self.impratio}"
            )

    @property
    def standing_joint_pos(self) -> np.ndarray:
        """Default joint positions [12] in JOINT_NAMES order [rad]."""
        leg = (self.standing_hip_rad, self.standing_thigh_rad, self.standing_calf_rad)
        return np.tile(np.array(leg), len(LEGS))


@dataclass(frozen=True)
class A1Model:
    """The compiled model and the indices the simulator needs. Shared per process: treat as read-only
    (copy it before changing parameters, as QuadrupedSim does for per-env domain randomisation)."""

    model: mujoco.MjModel
    config: A1Config
    base_qpos_adr: int
    """Index into qpos of the free joint: position (3) then quaternion w, x, y, z (4)."""
    base_dof_adr: int
    """Index into qvel of the free joint: linear velocity, world frame (3), then angular, body frame (3)."""
    joint_qpos_adr: np.ndarray
    """Index into qpos of each joint [12], JOINT_NAMES order."""
    joint_dof_adr: np.ndarray
    """Index into qvel of each joint [12]."""
    joint_range: np.ndarray
    """Lower and upper limit of each joint [12, 2] [rad]."""
    torque_limit: np.ndarray
    """Peak actuator torque of each joint [12] [N m], from the URDF's effort limits."""
    trunk_body_id: int
    foot_geom_ids: np.ndarray
    """The four foot spheres [4], LEGS order."""
    foot_body_ids: np.ndarray
    """The foot bodies [4] (the URDF's toe links, welded to the calves)."""
    foot_touch_adr: np.ndarray
    """Index into sensordata of each foot's touch sensor [4] (normal contact force [N])."""
    trunk_touch_adr: int
    standing_qpos: np.ndarray
    """Keyframe 0 [nq]: the robot at rest under the default targets (base at x = y = 0)."""
    obstacle_geom_id: int = -1
    """The obstacle box (A1Config.obstacle), -1 without one."""

    @property
    def standing_height_m(self) -> float:
        return float(self.standing_qpos[2])


def urdf_path() -> str:
    import pybullet_data

    return os.path.join(pybullet_data.getDataPath(), "a1", "a1.urdf")


def _urdf_without_visuals() -> str:
    """The URDF text without <visual> elements (their meshes need not load) and with each collision
    named after its link (MuJoCo's URDF reader warns about every unnamed one)."""
    path = urdf_path()
    if not os.path.exists(path):
        raise FileNotFoundError(f"A1 URDF not found at {path}: pip install pybullet (it ships pybullet_data)")
    root = ET.parse(path).getroot()
    for link in root.iter("link"):
        for visual in link.findall("visual"):
            link.remove(visual)
        for collision in link.findall("collision"):
            collision.set("name", link.get("name", ""))
    return ET.tostring(root, encoding="unicode")


def link_name(name: str) -> str:
    """FR_upper_joint -> FR_thigh_joint, FR_toe -> FR_foot; names outside the legs stay."""
    leg, _, rest = name.partition("_")
    if leg not in LEGS:
        return name
    part, sep, suffix = rest.partition("_")
    return f"{leg}_{_URDF_LINK_RENAMES.get(part, part)}{sep}{suffix}"


def _keep_floor_contacts_only(spec: mujoco.MjSpec, config: A1Config) -> None:
    """Delete every robot geom but the feet and the trunk; those collide with the floor only (contype 1
    against the floor's conaffinity 1), never with each other (their conaffinity is 0)."""
    feet = {f"{leg}_foot" for leg in LEGS}
    for geom in list(spec.geoms):
        if geom.name in feet:
            geom.priority = 1
            geom.friction = [config.foot_friction, 0.005, 0.0001]
        elif geom.name != "trunk":
            geom.delete()
    for geom in spec.geoms:
        geom.contype, geom.conaffinity = 1, 0
    spec.worldbody.add_geom(
        name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05], contype=0, conaffinity=1
    )
    if config.obstacle:
        # The world body's bounding-volume tree is built at compile time, around the parked box; with
        # the midphase on, a box moved or resized later is culled from collisions (measured: robots
        # fell through it). Five robot geoms make the midphase worth nothing here anyway.
        spec.option.disableflags |= mujoco.mjtDisableBit.mjDSBL_MIDPHASE
        spec.worldbody.add_geom(
            name="obstacle", type=mujoco.mjtGeom.mjGEOM_BOX, size=OBSTACLE_PARKED_HALF_SIZE_M,
            pos=OBSTACLE_PARKED_POS_M, contype=0, conaffinity=1,
        )  # fmt: skip


def _add_touch_sensors(spec: mujoco.MjSpec) -> None:
    """A touch sensor (summed normal force [N]) around each foot and the trunk: sensordata is the only
    per-env output of mujoco.rollout besides the state, so contacts must become sensors."""
    watched = ("trunk", *(f"{leg}_foot" for leg in LEGS))
    for name in watched:
        geom = spec.geom(name)
        site = spec.body(name).add_site(
            name=f"{name}_touch", type=geom.type, pos=geom.pos, quat=geom.quat, size=geom.size
        )
        half_sizes = 3 if geom.type == mujoco.mjtGeom.mjGEOM_BOX else 1  # a sphere has one, its radius
        site.size[:half_sizes] += _CONTACT_SITE_MARGIN_M
        spec.add_sensor(
            name=site.name, type=mujoco.mjtSensor.mjSENS_TOUCH, objtype=mujoco.mjtObj.mjOBJ_SITE,
            objname=site.name,
        )  # fmt: skip


def _add_pd_actuators(spec: mujoco.MjSpec, config: A1Config) -> None:
    """One position servo per joint, JOINT_NAMES order: torque = kp (target - q) - kd qdot, clipped to
    the URDF's effort limit; targets are limited to the joint range."""
    for name in JOINT_NAMES:
        joint = spec.joint(name)
        actuator = spec.add_actuator(name=name.removesuffix("_joint"), target=name)
        actuator.trntype = mujoco.mjtTrn.mjTRN_JOINT
        actuator.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        actuator.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        actuator.gainprm[0] = config.kp
        actuator.biasprm[:3] = [0.0, -config.kp, -config.kd]
        actuator.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        actuator.ctrlrange = joint.range
        actuator.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        actuator.forcerange = joint.actfrcrange


def _spec(config: A1Config) -> mujoco.MjSpec:
    spec = mujoco.MjSpec.from_string(_urdf_without_visuals())
    spec.modelname = "a1"
    spec.option.timestep = config.timestep_s
    spec.option.cone = mujoco.mjtCone.mjCONE_PYRAMIDAL
    spec.option.impratio = config.impratio
    # Implicit in the velocity terms, so the actuators' damping cannot destabilise the light legs.
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    for name in ("imu_link", *(f"{leg}_upper_shoulder" for leg in LEGS)):
        spec.detach_body(spec.body(name))
    for element in (*spec.bodies, *spec.joints, *spec.geoms):
        element.name = link_name(element.name)
    spec.body("trunk").add_freejoint(name="base")
    for name in JOINT_NAMES:
        spec.joint(name).solref_limit = [2.0 * config.timestep_s, 1.0]
        spec.joint(name).solimp_limit = _LIMIT_IMPEDANCE
    _keep_floor_contacts_only(spec, config)
    _add_touch_sensors(spec)
    _add_pd_actuators(spec, config)
    return spec


def _standing_qpos(
    model: mujoco.MjModel, config: A1Config, joint_qpos_adr: np.ndarray, joint_dof_adr: np.ndarray
) -> np.ndarray:
    """The robot at rest on the floor under the default targets: lowered onto its feet, then settled
    with extra joint damping (removed again) so that every reset starts without a sagging transient."""
    data = mujoco.MjData(model)
    base = model.joint("base").qposadr[0]
    data.qpos[:] = model.qpos0
    data.qpos[joint_qpos_adr] = config.standing_joint_pos
    data.qpos[base : base + 3] = 0.0
    mujoco.mj_kinematics(model, data)
    foot_ids = [model.geom(f"{leg}_foot").id for leg in LEGS]
    data.qpos[base + 2] = -np.min(data.geom_xpos[foot_ids, 2] - model.geom_size[foot_ids, 0])
    data.ctrl[:] = config.standing_joint_pos
    settling = copy.copy(model)
    settling.dof_damping[joint_dof_adr] = _SETTLING_DAMPING
    for _ in range(round(_SETTLING_TIME_S / model.opt.timestep)):
        mujoco.mj_step(settling, data)
    qpos = data.qpos.copy()
    qpos[base : base + 2] = 0.0
    return qpos


def _joint_addresses(model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray]:
    """qpos and qvel indices of the JOINT_NAMES joints [12] each."""
    joints = [model.joint(name) for name in JOINT_NAMES]
    return np.array([j.qposadr[0] for j in joints]), np.array([j.dofadr[0] for j in joints])


@functools.cache
def build_a1(config: A1Config = A1Config()) -> A1Model:
    """Compile the A1 once per distinct config (cached for the process)."""
    spec = _spec(config)
    unposed = spec.compile()
    spec.add_key(name="standing", qpos=_standing_qpos(unposed, config, *_joint_addresses(unposed)),
                 ctrl=config.standing_joint_pos)  # fmt: skip
    model = spec.compile()
    joint_qpos_adr, joint_dof_adr = _joint_addresses(model)
    foot_geom_ids = np.array([model.geom(f"{leg}_foot").id for leg in LEGS])

    def sensor_adr(name: str) -> int:
        return int(model.sensor_adr[model.sensor(name).id])

    return A1Model(
        model=model,
        config=config,
        base_qpos_adr=int(model.joint("base").qposadr[0]),
        base_dof_adr=int(model.joint("base").dofadr[0]),
        joint_qpos_adr=joint_qpos_adr,
        joint_dof_adr=joint_dof_adr,
        joint_range=model.jnt_range[[model.joint(name).id for name in JOINT_NAMES]].copy(),
        torque_limit=model.actuator_forcerange[:, 1].copy(),
        trunk_body_id=model.body("trunk").id,
        foot_geom_ids=foot_geom_ids,
        foot_body_ids=np.array([model.body(f"{leg}_foot").id for leg in LEGS]),
        foot_touch_adr=np.array([sensor_adr(f"{leg}_foot_touch") for leg in LEGS]),
        trunk_touch_adr=sensor_adr("trunk_touch"),
        standing_qpos=model.key_qpos[0].copy(),
        obstacle_geom_id=model.geom("obstacle").id if config.obstacle else -1,
    )
