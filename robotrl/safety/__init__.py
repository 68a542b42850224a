"""Safety filters between a policy and the actuators, numpy only, shared by simulation and the robot.

See chain.py for the modes and why faults latch; config.py for the per-robot limits (hardware/*.yaml).
"""

from robotrl.safety.chain import Fault, Mode, SafetyChain, SafetyOutput
from robotrl.safety.config import SafetyConfigError, SafetyLimits, check_against_bundle
from robotrl.safety.fallback import Fallback, LandingFallback
from robotrl.safety.filters import FilterContext, SafetyFilter, Status, Verdict

__all__ = [
    "Fallback",
    "Fault",
    "FilterContext",
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
]
