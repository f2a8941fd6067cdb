"""Score-based generative models and what a score gives: forward processes (`processes`),
samplers (`sampling`), exact likelihoods through the probability-flow ODE (`likelihood`),
score networks and losses (`score_matching`; training in `tidal.training.score`), exact
diffused mixtures (`mixtures`) and entropy production (`entropy`)."""

from tidal.diffusion.processes import VESDE, VPSDE, EDMProcess, ForwardProcess, SubVPSDE

__all__ = ["VESDE", "VPSDE", "EDMProcess", "ForwardProcess", "SubVPSDE"]
