"""Step-size control: the controller protocol (`base`), error norms and the initial step
(`norms`), and the controllers."""

from tidal.controllers.adaptive import AdaptiveController
from tidal.controllers.base import StepSizeController
from tidal.controllers.constant import ConstantStepSize, StepTo
from tidal.controllers.pid import PIDController

__all__ = ["AdaptiveController", "ConstantStepSize", "PIDController", "StepSizeController",
           "StepTo"]
