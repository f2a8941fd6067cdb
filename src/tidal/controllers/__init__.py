"""Step-size control: error norms, the initial step, and the controllers."""

from tidal.controllers.constant import ConstantStepSize, StepTo
from tidal.controllers.pid import PIDController

__all__ = ["ConstantStepSize", "PIDController", "StepTo"]
