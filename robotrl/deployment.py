"""A deployment YAML (configs/deploy/*.yaml) turned into the list of ROS 2 nodes that run it.

`node_list` is the one place that decides which nodes run with which parameters and remappings.
`robotrl deploy` starts exactly that list (composed in one process, or one process a node), and
`launch/*.launch.py` hands the same list to `ros2 launch` on a robot with a full ROS 2 install, so the
graph tested here is the graph run there. No rclpy here: the list is plain data. The YAML's `graph:`
picks the robot's graph: `quadrotor` (the default) or `quadruped`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robotrl.config import ConfigError, apply_overrides, from_dict, load_yaml
from robotrl.control.geometric import GeometricController, NominalQuadrotor
from robotrl.control.legged import JointProfile
from robotrl.control.reference import ReferenceConfig
from robotrl.safety import DampedFallback, JointSafetyLimits, LandingFallback, SafetyChain, SafetyLimits

PACKAGE = "robotrl_ros"
REPO_ROOT = Path(__file__).resolve().parent.parent

TOPICS: dict[str, tuple[str, str, str]] = {
    # name: (message type, QoS, meaning)
    "/robotrl/state": ("nav_msgs/msg/Odometry", "best effort, depth 1",
                       "quadrotor state at the control rate; pose in 'world' (z-up), twist in 'base_link' "
                       "(FLU)"),
    "/robotrl/joint_states": ("sensor_msgs/msg/JointState", "best effort, depth 1",
                              "legged robot joints at the control rate, motor order: position [rad], "
                              "velocity [rad/s], effort = torque [N m]"),
    "/robotrl/imu": ("sensor_msgs/msg/Imu", "best effort, depth 1",
                     "legged robot trunk: orientation (body to world), angular velocity (body, FLU); "
                     "linear acceleration unset (covariance[0] = -1); same stamp as the joint states"),
    "/robotrl/foot_contacts": ("sensor_msgs/msg/JointState", "best effort, depth 1",
                               "legged robot feet (name FR_foot, ...): effort = normal force [N], peak over "
                               "the period; same stamp as the joint states"),
    "/robotrl/reference": ("trajectory_msgs/msg/MultiDOFJointTrajectory", "reliable, depth 1",
                           "setpoints (position, velocity; world) from the stamp on, one a control period, "
                           "20 Hz, 80 ms ahead; evaluated at each state's stamp"),
    "/robotrl/policy/observation": ("sensor_msgs/msg/JointState", "reliable, depth 10",
                                    "the policy's input; stamp = the state's stamp, position = values"),
    "/robotrl/policy/action": ("sensor_msgs/msg/JointState", "reliable, depth 1",
                               "the policy's output; stamp = the state's stamp, effort = values in the "
                               "bundle's action bounds"),
    "/robotrl/teleop/joy": ("sensor_msgs/msg/Joy", "best effort, depth 1",
                            "operator sticks and buttons (joy_node on a robot, keyboard_teleop here)"),
    "/robotrl/teleop/command": ("sensor_msgs/msg/JointState", "reliable, depth 1",
                                "the operator's action, only while the deadman is held; same layout"),
    "/robotrl/command": ("sensor_msgs/msg/JointState", "reliable, depth 10",
                         "the arbitrated action (policy or human) the safety chain filtered; for recorders"),
    "/robotrl/intervention": ("diagnostic_msgs/msg/DiagnosticArray", "reliable, depth 10",
                              "who produced each command: status 'intervention', message human or policy"),
    "/robotrl/motor_cmd": ("sensor_msgs/msg/JointState", "reliable, depth 1",
                           "the action after the safety chain, what the motors get: quadrotor effort = "
                           "motor commands; legged position = joint targets [rad], NaN = damped (kp 0, kd "
                           "damping_kd)"),
    "/robotrl/safety/status": ("diagnostic_msgs/msg/DiagnosticArray", "reliable, depth 10",
                               "safety mode, first latched fault, arming refusals; on change and at 10 Hz"),
    "/robotrl/episode": ("std_msgs/msg/UInt32", "reliable, transient local, depth 1",
                         "episode index, published when an episode starts"),
}  # fmt: skip
"""Every topic of the graphs (the README's table is generated from it). The quadrotor graph uses state and
reference; the quadruped graph joint_states, imu and foot_contacts, and no reference, teleop or recorder."""

SERVICES: dict[str, tuple[str, str]] = {
    "/robotrl/safety/arm": ("std_srvs/srv/SetBool", "arm (true) or disarm (false); refused with the reason"),
    "/robotrl/safety/estop": ("std_srvs/srv/Trigger", "latched e-stop: the stop action (quadrotor motors "
                              "off, legged joints damped) until reset"),
    "/robotrl/safety/reset": ("std_srvs/srv/Trigger", "clear latched faults and e-stop; back to disarmed"),
    "/robotrl/jump": ("std_srvs/srv/Trigger", "quadruped: jump to the policy node's landing_* parameters; "
                      "refused while a jump runs"),
}  # fmt: skip


@dataclass
class BridgeConfig:
    backend: str = "sim"
    """sim: our quadrotor simulator stepped in real time. Hardware drivers plug in here later."""
    platform: str = "crazyflie"
    """Named platform (sim/quadrotor/<name>.yaml) or a path to a platform file."""
    initial_position_m: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """Where the simulated quad starts, hovering, in the world frame."""
    ground_z_m: float = 0.0
    """Height of the simulated floor: a quad that reaches it rests there."""
    drop_state_fraction: float = 0.0
    """Fault injection: this fraction of state messages is never published (seeded)."""
    seed: int = 0


@dataclass
class InterventionConfig:
    deadman_button: int = 4
    """Joy button that must be held for the operator to command (4: left shoulder on most pads)."""
    axes: tuple[int, int, int] = (3, 2, 1)
    """Joy axes moving the setpoint along world x, y, z (right stick, left stick vertical by default)."""
    max_speed_mps: float = 0.5
    """Full stick moves the operator's setpoint this fast."""
    joy_timeout_s: float = 0.2
    """A joystick silent this long counts as released."""


@dataclass
class SafetyNodeConfig:
    auto_arm: bool = True
    """Arm as soon as the arming gate allows (simulation); on a robot arm through the service."""
    status_rate_hz: float = 10.0
    human_timeout_s: float = 0.015
    """Operator commands override the policy's until none came for this long (then the policy flies).
    Keep it well under the robot's action_timeout_s: the policy's actions are set aside meanwhile."""


@dataclass
class RecorderConfig:
    enabled: bool = False
    out: str = "runs/deploy/recording"
    """A new bag directory (MCAP); an existing one is refused."""


@dataclass
class NodesConfig:
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    safety: SafetyNodeConfig = field(default_factory=SafetyNodeConfig)
    recorder: RecorderConfig = field(default_factory=RecorderConfig)


@dataclass
class QuadrupedBridgeConfig:
    backend: str = "sim"
    """sim: one A1 in MuJoCo, stepped one control period a tick. Hardware drivers plug in here later."""
    command_timeout_periods: int = 5
    """No motor command for this many control periods damps every joint, as a motor driver's own watchdog
    does; longer than the safety chain's action timeout, so this only acts when the safety node is gone."""
    drop_state_fraction: float = 0.0
    """Fault injection: this fraction of control periods publishes no state messages (seeded)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.command_timeout_periods < 1:
            raise ValueError(f"command_timeout_periods must be >= 1, got {self.command_timeout_periods}")


@dataclass
class JumpConfig:
    """The jump the policy node commands on /robotrl/jump; read at each trigger, so `ros2 param set` works
    between jumps. Landing relative to where the robot stands, in its heading frame."""

    landing_x_m: float = 0.0
    landing_y_m: float = 0.0
    landing_yaw_rad: float = 0.0
    episode_s: float = 3.0
    """How long the policy acts after a trigger (the training episodes' length: 3 s in place, 4 s with a
    horizontal target); then the node holds the default pose again."""

    def __post_init__(self) -> None:
        if not self.episode_s > 0:
            raise ValueError(f"episode_s must be > 0, got {self.episode_s}")


@dataclass
class QuadrupedNodesConfig:
    bridge: QuadrupedBridgeConfig = field(default_factory=QuadrupedBridgeConfig)
    policy: JumpConfig = field(default_factory=JumpConfig)
    safety: SafetyNodeConfig = field(default_factory=SafetyNodeConfig)


@dataclass
class DeploymentBase:
    """What every deployment names; the graphs' own classes add their nodes and defaults."""

    name: str
    graph: str
    """Which robot's graph: 'quadrotor' or 'quadruped' (the YAML's key picks the class, see GRAPHS)."""
    robot: str
    """The robot's profile: safety limits, platform. Relative paths are from the repository root."""
    bundle: str
    """The policy bundle to run."""
    control_rate_hz: float
    remappings: dict[str, dict[str, str]]
    """Per node name: {from_topic: to_topic}."""

    def __post_init__(self) -> None:
        if not self.control_rate_hz > 0:
            raise ValueError(f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        if GRAPHS.get(self.graph) is not type(self):
            raise ValueError(
                f"graph {self.graph!r} does not match {type(self).__name__}; graphs: {list(GRAPHS)}"
            )


@dataclass
class DeploymentConfig(DeploymentBase):
    """A quadrotor: bridge, reference, policy, intervention, safety, optionally a recorder."""

    name: str = "quadrotor_sim"
    graph: str = "quadrotor"
    robot: str = "hardware/crazyflie_sim.yaml"
    bundle: str = "runs/demo/bundle"
    control_rate_hz: float = 100.0
    remappings: dict[str, dict[str, str]] = field(default_factory=dict)
    nodes: NodesConfig = field(default_factory=NodesConfig)


@dataclass
class QuadrupedDeploymentConfig(DeploymentBase):
    """A quadruped jumping: bridge, jump policy, joint safety chain."""

    name: str = "quadruped_sim"
    graph: str = "quadruped"
    robot: str = "hardware/a1_sim.yaml"
    bundle: str = "runs/jump/bundle"
    control_rate_hz: float = 50.0
    remappings: dict[str, dict[str, str]] = field(default_factory=dict)
    nodes: QuadrupedNodesConfig = field(default_factory=QuadrupedNodesConfig)


GRAPHS: dict[str, type[DeploymentBase]] = {
    "quadrotor": DeploymentConfig,
    "quadruped": QuadrupedDeploymentConfig,
}


@dataclass(frozen=True)
class NodeSpec:
    """What `ros2 launch` needs to start one node, and what `robotrl deploy` builds in process."""

    package: str
    executable: str
    name: str
    parameters: dict[str, Any]
    remappings: tuple[tuple[str, str], ...] = ()


def resolve_path(path: str) -> str:
    """Absolute path; relative ones are taken from the repository root, where configs name them from."""
    p = Path(path)
    return str(p if p.is_absolute() else (REPO_ROOT / p))


@dataclass(frozen=True)
class RobotProfile:
    """A robot's file under hardware/: which platform it is, the limits the safety chain enforces and, for
    a legged robot, its joints."""

    path: str
    platform: str
    safety: dict[str, Any]
    joints: dict[str, Any] = field(default_factory=dict)
    """The `joints:` section (legged robots only): see robotrl.control.legged.JointProfile."""


def load_robot_profile(path: str) -> RobotProfile:
    if not path:
        raise ConfigError("no robot profile given: pass the path of a hardware/<robot>.yaml file")
    data = load_yaml(path)
    missing = sorted({"platform", "safety"} - set(data))
    if missing:
        raise ConfigError(f"{path}: missing section(s) {missing}; see hardware/crazyflie_sim.yaml")
    for section in ("safety", "joints"):
        if not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"{path}: '{section}' must be a mapping")
    return RobotProfile(str(path), str(data["platform"]), data["safety"], data.get("joints", {}))


def quadrotor_safety_chain(robot: RobotProfile, control_rate_hz: float) -> SafetyChain:
    """The robot's limits with the geometric landing fallback on its nominal model."""
    limits = SafetyLimits.from_mapping(robot.safety, source=robot.path)
    nominal = NominalQuadrotor.from_platform_yaml(robot.platform)
    controller = GeometricController(nominal, dt=1.0 / control_rate_hz)
    return SafetyChain(limits, LandingFallback(controller, limits))


def joint_limits(robot: RobotProfile) -> JointSafetyLimits:
    """A legged robot's joints (`joints:`) and the limits on them (`safety:`)."""
    if not robot.joints:
        raise ConfigError(
            f"{robot.path}: no 'joints:' section, so not a legged robot; see hardware/a1_sim.yaml"
        )
    joints = from_dict(JointProfile, robot.joints, where=f"{robot.path} (joints:)")
    return JointSafetyLimits.from_mapping(robot.safety, joints, source=f"{robot.path} (safety:)")


def joint_safety_chain(limits: JointSafetyLimits) -> SafetyChain:
    """The joint filters with every joint damped as the fallback."""
    return SafetyChain(limits, DampedFallback(limits.joints.num_joints))


def load_deployment(
    path: str | Path, bundle: str | None = None, overrides: list[str] | None = None
) -> DeploymentBase:
    """A deployment YAML (its `graph:` picks the class) with `key.sub=value` overrides and, optionally,
    another bundle."""
    raw = load_yaml(path)
    graph = raw.get("graph", "quadrotor")
    if graph not in GRAPHS:
        raise ConfigError(f"{path}: graph {graph!r} is not one of {list(GRAPHS)}")
    cls = GRAPHS[graph]
    data = apply_overrides(raw, overrides or [], cls)
    if bundle:
        data["bundle"] = bundle
    return from_dict(cls, {"graph": graph, **data}, where=str(path))


def _params(section: Any) -> dict[str, Any]:
    """A config section as ROS parameters: tuples become lists (ROS arrays), everything else as is."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(section).items()}


def _quadrotor_nodes(config: DeploymentConfig) -> list[tuple[str, str, dict[str, Any]]]:
    robot, bundle, nodes = resolve_path(config.robot), resolve_path(config.bundle), config.nodes
    specs = [
        ("reference", "reference_node", _params(nodes.reference)),
        ("policy", "policy_node", {"bundle": bundle}),
        ("intervention", "intervention_node", {"robot": robot, **_params(nodes.intervention)}),
        ("safety", "safety_node", {"robot": robot, "bundle": bundle, **_params(nodes.safety)}),
    ]
    if nodes.recorder.enabled:
        specs.append(("recorder", "recorder_node", {"out": resolve_path(nodes.recorder.out)}))
    if nodes.bridge.backend != "sim":
        raise ConfigError(f"nodes.bridge.backend '{nodes.bridge.backend}': only 'sim' exists so far")
    return [*specs, ("bridge", "bridge_node", _params(nodes.bridge))]


def _quadruped_nodes(config: QuadrupedDeploymentConfig) -> list[tuple[str, str, dict[str, Any]]]:
    robot, bundle, nodes = resolve_path(config.robot), resolve_path(config.bundle), config.nodes
    if nodes.bridge.backend != "sim":
        raise ConfigError(f"nodes.bridge.backend '{nodes.bridge.backend}': only 'sim' exists so far")
    return [
        ("policy", "jump_policy_node", {"robot": robot, "bundle": bundle, **_params(nodes.policy)}),
        ("safety", "joint_safety_node", {"robot": robot, "bundle": bundle, **_params(nodes.safety)}),
        ("bridge", "quadruped_bridge_node", {"robot": robot, **_params(nodes.bridge)}),
    ]


def node_list(config: DeploymentBase) -> list[NodeSpec]:
    """The nodes of the graph, in start order (the bridge last, so the others are listening)."""
    if isinstance(config, QuadrupedDeploymentConfig):
        specs = _quadruped_nodes(config)
    elif isinstance(config, DeploymentConfig):
        specs = _quadrotor_nodes(config)
    else:
        raise TypeError(f"no node list for {type(config).__name__}; graphs: {list(GRAPHS)}")
    names = {name for name, _, _ in specs}
    unknown = sorted(set(config.remappings) - names)
    if unknown:
        raise ConfigError(f"remappings for unknown node(s) {unknown}; nodes: {sorted(names)}")
    common = {"control_rate_hz": float(config.control_rate_hz)}
    return [
        NodeSpec(
            package=PACKAGE,
            executable=executable,
            name=name,
            parameters={**common, **params},
            remappings=tuple(config.remappings.get(name, {}).items()),
        )
        for name, executable, params in specs
    ]
