"""A deployment YAML (configs/deploy/*.yaml) turned into the list of ROS 2 nodes that fly it.

`node_list` is the one place that decides which nodes run with which parameters and remappings.
`robotrl deploy` starts exactly that list (composed in one process, or one process a node), and
`launch/*.launch.py` hands the same list to `ros2 launch` on a robot with a full ROS 2 install, so the
graph tested here is the graph flown there. No rclpy here: the list is plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robotrl.config import ConfigError, apply_overrides, from_dict, load_yaml
from robotrl.control.geometric import GeometricController, NominalQuadrotor
from robotrl.control.reference import ReferenceConfig
from robotrl.safety import LandingFallback, SafetyChain, SafetyLimits

PACKAGE = "robotrl_ros"
REPO_ROOT = Path(__file__).resolve().parent.parent

TOPICS: dict[str, tuple[str, str, str]] = {
    # name: (message type, QoS, meaning)
    "/robotrl/state": ("nav_msgs/msg/Odometry", "best effort, depth 1",
                       "robot state at the control rate; pose in 'world' (z-up), twist in 'base_link' (FLU)"),
    "/robotrl/reference": ("trajectory_msgs/msg/MultiDOFJointTrajectory", "reliable, depth 1",
                           "setpoints (position, velocity; world) from the stamp on, one a control period, "
                           "20 Hz, 80 ms ahead; evaluated at each state's stamp"),
    "/robotrl/policy/observation": ("sensor_msgs/msg/JointState", "reliable, depth 10",
                                    "the policy's input; stamp = the state's stamp, position = values"),
    "/robotrl/policy/action": ("sensor_msgs/msg/JointState", "reliable, depth 1",
                               "the policy's output; stamp = the state's stamp, effort = values in [-1, 1]"),
    "/robotrl/teleop/joy": ("sensor_msgs/msg/Joy", "best effort, depth 1",
                            "operator sticks and buttons (joy_node on a robot, keyboard_teleop here)"),
    "/robotrl/teleop/command": ("sensor_msgs/msg/JointState", "reliable, depth 1",
                                "the operator's action, only while the deadman is held; same layout"),
    "/robotrl/command": ("sensor_msgs/msg/JointState", "reliable, depth 10",
                         "the arbitrated action (policy or human) the safety chain filtered; for recorders"),
    "/robotrl/intervention": ("diagnostic_msgs/msg/DiagnosticArray", "reliable, depth 10",
                              "who produced each command: status 'intervention', message human or policy"),
    "/robotrl/motor_cmd": ("sensor_msgs/msg/JointState", "reliable, depth 1",
                           "the action after the safety chain: what the motors get"),
    "/robotrl/safety/status": ("diagnostic_msgs/msg/DiagnosticArray", "reliable, depth 10",
                               "safety mode, first latched fault, arming refusals; on change and at 10 Hz"),
    "/robotrl/episode": ("std_msgs/msg/UInt32", "reliable, transient local, depth 1",
                         "episode index, published when an episode starts"),
}  # fmt: skip
"""Every topic of the graph (the README's table is generated from it)."""

SERVICES: dict[str, tuple[str, str]] = {
    "/robotrl/safety/arm": ("std_srvs/srv/SetBool", "arm (true) or disarm (false); refused with the reason"),
    "/robotrl/safety/estop": ("std_srvs/srv/Trigger", "latched e-stop: motors to zero until reset"),
    "/robotrl/safety/reset": ("std_srvs/srv/Trigger", "clear latched faults and e-stop; back to disarmed"),
}


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
class DeploymentConfig:
    name: str = "quadrotor_sim"
    robot: str = "hardware/crazyflie_sim.yaml"
    """The robot's profile: safety limits, platform. Relative paths are from the repository root."""
    bundle: str = "runs/demo/bundle"
    """The policy bundle to fly."""
    control_rate_hz: float = 100.0
    nodes: NodesConfig = field(default_factory=NodesConfig)
    remappings: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per node name: {from_topic: to_topic}."""

    def __post_init__(self) -> None:
        if not self.control_rate_hz > 0:
            raise ValueError(f"control_rate_hz must be > 0, got {self.control_rate_hz}")


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
    """A robot's file under hardware/: which platform it is and the limits the safety chain enforces."""

    path: str
    platform: str
    safety: dict[str, Any]


def load_robot_profile(path: str) -> RobotProfile:
    if not path:
        raise ConfigError("no robot profile given: pass the path of a hardware/<robot>.yaml file")
    data = load_yaml(path)
    missing = sorted({"platform", "safety"} - set(data))
    if missing:
        raise ConfigError(f"{path}: missing section(s) {missing}; see hardware/crazyflie_sim.yaml")
    if not isinstance(data["safety"], dict):
        raise ConfigError(f"{path}: 'safety' must be a mapping of limits")
    return RobotProfile(path=str(path), platform=str(data["platform"]), safety=data["safety"])


def quadrotor_safety_chain(robot: RobotProfile, control_rate_hz: float) -> SafetyChain:
    """The robot's limits with the geometric landing fallback on its nominal model."""
    limits = SafetyLimits.from_mapping(robot.safety, source=robot.path)
    nominal = NominalQuadrotor.from_platform_yaml(robot.platform)
    controller = GeometricController(nominal, dt=1.0 / control_rate_hz)
    return SafetyChain(limits, LandingFallback(controller, limits))


def load_deployment(
    path: str | Path, bundle: str | None = None, overrides: list[str] | None = None
) -> DeploymentConfig:
    """A deployment YAML with `key.sub=value` overrides and, optionally, another bundle."""
    data = apply_overrides(load_yaml(path), overrides or [], DeploymentConfig)
    if bundle:
        data["bundle"] = bundle
    return from_dict(DeploymentConfig, data, where=str(path))


def _params(section: Any) -> dict[str, Any]:
    """A config section as ROS parameters: tuples become lists (ROS arrays), everything else as is."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(section).items()}


def node_list(config: DeploymentConfig) -> list[NodeSpec]:
    """The nodes of the graph, in start order (the bridge last, so the others are listening)."""
    common = {"control_rate_hz": float(config.control_rate_hz)}
    robot = resolve_path(config.robot)
    nodes = config.nodes
    specs = [
        ("reference", "reference_node", _params(nodes.reference)),
        ("policy", "policy_node", {"bundle": resolve_path(config.bundle)}),
        ("intervention", "intervention_node", {"robot": robot, **_params(nodes.intervention)}),
        ("safety", "safety_node", {"robot": robot, "bundle": resolve_path(config.bundle),
                                   **_params(nodes.safety)}),
    ]  # fmt: skip
    if nodes.recorder.enabled:
        specs.append(("recorder", "recorder_node", {"out": resolve_path(nodes.recorder.out)}))
    if nodes.bridge.backend != "sim":
        raise ConfigError(f"nodes.bridge.backend '{nodes.bridge.backend}': only 'sim' exists so far")
    specs.append(("bridge", "bridge_node", _params(nodes.bridge)))
    names = {name for name, _, _ in specs}
    unknown = sorted(set(config.remappings) - names)
    if unknown:
        raise ConfigError(f"remappings for unknown node(s) {unknown}; nodes: {sorted(names)}")
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
