"""Safety filters between a policy and the actuators, numpy only, shared by simulation and the robot.

See chain.py for the modes and why faults latch; config.py for the per-robot limits (hardware/*.yaml);
joints.py for robots commanded by joint targets (damped joints as the fallback).
"""

from robotrl.safety.chain import Fault, Mode, SafetyChain, SafetyOutput
from robotrl.safety.config import SafetyConfigError, SafetyLimits, check_against_bundle
from robotrl.safety.fallback import Fallback, LandingFallback
from robotrl.safety.filters import FilterContext, SafetyFilter, Status, Verdict
from robotrl.safety.joints import DampedFallback, JointSafetyLimits, check_joints_against_bundle

__all__ = [
    "DampedFallback",
    "Fallback",
    "Fault",
    "FilterContext",
    "JointSafetyLimits",
    "LandingFallback",
    "Mode",
    "SafetyChain",
    "SafetyConfigError",
    "SafetyFilter",
    "SafetyLimits",
    "SafetyOutput",
    "Status",
    "Verdict",
    "check_against_bundle",
    "check_joints_against_bundle",
]
