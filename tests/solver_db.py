"""The test registries: one entry per solver, adjoint and controller, in the style of torch's
`OptimizerInfo` (common_optimizers.py). Generic tests are parametrized over these lists, so a
new method is tested by adding one entry here; `test_registry.py` checks that every name in
`tidal.SOLVERS`, `tidal.ADJOINTS` and `tidal.CONTROLLERS` has an entry, and runs every entry's
`error_inputs` (bad uses and the error each must raise, like torch's `ErrorOptimizerInput`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import tidal
from tidal import solvers as S

F64 = torch.float64


@dataclass(frozen=True)
class ErrorInput:
    """A bad use and the error it must raise: `call()` raises `error` with a message that
    matches `match` (a regular expression naming the argument)."""

    desc: str
    call: Callable[[], object]
    error: type[Exception]
    match: str


def _decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -y


def _solve(**options: object) -> Callable[[], object]:
    """A small solve with `options` (y' = -y on [0, 1], a [2, 2] state)."""
    def call() -> object:
        rest = {k: v for k, v in options.items() if k not in ("y0", "ts")}
        y0 = options.get("y0", torch.ones(2, 2, dtype=F64))
        ts = options.get("ts", torch.tensor([0.0, 1.0], dtype=F64))
        return tidal.solve(_decay, y0, ts, **rest)
    return call


@dataclass(frozen=True)
class SolverInfo:
    cls: type[tidal.solvers.StepMethod]
    order: int
    adaptive: bool
    dense_order: int
    #: works on any f and state layout (False: a splitting, for separable H on (q, p) halves)
    general: bool = True
    error_inputs: Callable[[], list[ErrorInput]] = field(default=lambda: [])

    @property
    def id(self) -> str:
        return self.cls.name


def _fixed_step_errors(cls: type) -> Callable[[], list[ErrorInput]]:
    return lambda: [
        ErrorInput("no controller for a method without an error estimate",
                   _solve(solver=cls()), tidal.InvalidArgumentError,
                   r"ConstantStepSize\(dt\)"),
        ErrorInput("an adaptive controller for a fixed-step method",
                   _solve(solver=cls(), controller=tidal.PIDController(1e-6, 1e-8)),
                   tidal.IncompatibleOptionsError, r"no error estimate"),
    ]


def _splitting_errors(cls: type) -> Callable[[], list[ErrorInput]]:
    def inputs() -> list[ErrorInput]:
        odd = _solve(solver=cls(), controller=tidal.ConstantStepSize(0.1),
                     y0=torch.ones(3, dtype=F64))
        return [*_fixed_step_errors(cls)(),
                ErrorInput("a state without (q, p) halves", odd, tidal.InvalidArgumentError,
                           r"last dimension"),
                ErrorInput("the backsolve adjoint on [y, a, g]",
                           _solve(solver=cls(), controller=tidal.ConstantStepSize(0.1),
                                  adjoint=tidal.BacksolveAdjoint()),
                           tidal.IncompatibleOptionsError, r"CheckpointAdjoint")]
    return inputs


def _implicit_midpoint_errors() -> list[ErrorInput]:
    return [*_fixed_step_errors(tidal.ImplicitMidpoint)(),
            ErrorInput("tol outside (0, 1)", lambda: tidal.ImplicitMidpoint(tol=0.0),
                       tidal.InvalidArgumentError, r"ImplicitMidpoint\(tol=0.0\)"),
            ErrorInput("max_iters not a positive integer",
                       lambda: tidal.ImplicitMidpoint(max_iters=0),
                       tidal.InvalidArgumentError, r"max_iters"),
            ErrorInput("an iteration that cannot converge",
                       _solve(solver=tidal.ImplicitMidpoint(max_iters=2),
                              controller=tidal.ConstantStepSize(0.5)),
                       tidal.SolveFailedError, r"NOT_CONVERGED")]


def _newton_errors(cls: type) -> Callable[[], list[ErrorInput]]:
    name = cls.__name__
    return lambda: [
        *_fixed_step_errors(cls)(),
        ErrorInput("tol outside (0, 1)", lambda: cls(tol=1.5), tidal.InvalidArgumentError,
                   rf"{name}\(tol=1.5\)"),
        ErrorInput("max_iters not a positive integer", lambda: cls(max_iters=0),
                   tidal.InvalidArgumentError, rf"{name}\(max_iters=0\)"),
        ErrorInput("a Newton iteration that cannot converge in one iteration",
                   _solve(solver=cls(max_iters=1), controller=tidal.ConstantStepSize(0.5)),
                   tidal.SolveFailedError, r"NOT_CONVERGED"),
        *_jacobian_errors(cls, controller=tidal.ConstantStepSize(0.5)),
    ]


def _adaptive_errors(cls: type) -> Callable[[], list[ErrorInput]]:
    return lambda: [
        ErrorInput("the class instead of an instance", _solve(solver=cls),
                   tidal.InvalidArgumentError, rf"solver={cls.__name__}\(\)"),
        ErrorInput("a name instead of an object", _solve(solver=cls.name),
                   tidal.InvalidArgumentError, r"takes a solver object"),
    ]


def _jacobian_errors(cls: type, **fixed: object) -> list[ErrorInput]:
    """Bad uses of a method that forms Jacobians (`fixed`: its controller, if it needs one)."""
    name = cls.__name__
    return [
        ErrorInput("jac that is not callable", lambda: cls(jac=1.0), tidal.InvalidArgumentError,
                   rf"{name}\(jac=1.0\)"),
        ErrorInput("jac of the wrong shape",
                   _solve(solver=cls(jac=lambda t, y: -torch.ones(2, 2, dtype=F64)), **fixed),
                   tidal.InvalidArgumentError, r"`jac=`.*\(2, 2, 2\)"),
    ]


def _calibration_error(cls: type) -> ErrorInput:
    return ErrorInput("a tolerance calibration that is not positive",
                      lambda: cls(tolerance_calibration=0.0), tidal.InvalidArgumentError,
                      rf"{cls.__name__}\(tolerance_calibration=0.0\)")


def _rosenbrock_errors(cls: type) -> Callable[[], list[ErrorInput]]:
    return lambda: [*_adaptive_errors(cls)(), *_jacobian_errors(cls), _calibration_error(cls)]


def _auto_errors() -> list[ErrorInput]:
    return [
        *_adaptive_errors(tidal.Auto)(),
        ErrorInput("a bound that is not positive", lambda: tidal.Auto(stiff_bound=0.0),
                   tidal.InvalidArgumentError, r"Auto\(stiff_bound=0.0\)"),
        ErrorInput("bounds in the wrong order", lambda: tidal.Auto(nonstiff_bound=4.0),
                   tidal.InvalidArgumentError, r"nonstiff_bound must be below"),
        ErrorInput("patience not a positive integer", lambda: tidal.Auto(patience=0),
                   tidal.InvalidArgumentError, r"Auto\(patience=0\)"),
        _calibration_error(tidal.Auto),
    ]


SOLVER_DB = [
    SolverInfo(tidal.Euler, 1, False, 3, error_inputs=_fixed_step_errors(tidal.Euler)),
    SolverInfo(tidal.Midpoint, 2, False, 3, error_inputs=_fixed_step_errors(tidal.Midpoint)),
    SolverInfo(tidal.Heun2, 2, False, 3, error_inputs=_fixed_step_errors(tidal.Heun2)),
    SolverInfo(tidal.Heun3, 3, False, 3, error_inputs=_fixed_step_errors(tidal.Heun3)),
    SolverInfo(tidal.RK4, 4, False, 3, error_inputs=_fixed_step_errors(tidal.RK4)),
    SolverInfo(tidal.HeunEuler, 2, True, 3, error_inputs=_adaptive_errors(tidal.HeunEuler)),
    SolverInfo(tidal.Fehlberg2, 2, True, 3, error_inputs=_adaptive_errors(tidal.Fehlberg2)),
    SolverInfo(tidal.Bosh3, 3, True, 3, error_inputs=_adaptive_errors(tidal.Bosh3)),
    SolverInfo(tidal.Dopri5, 5, True, 4, error_inputs=_adaptive_errors(tidal.Dopri5)),
    SolverInfo(tidal.Tsit5, 5, True, 4, error_inputs=_adaptive_errors(tidal.Tsit5)),
    SolverInfo(tidal.Dopri8, 8, True, 7, error_inputs=_adaptive_errors(tidal.Dopri8)),
    SolverInfo(tidal.Leapfrog, 2, False, 3, general=False,
               error_inputs=_splitting_errors(tidal.Leapfrog)),
    SolverInfo(tidal.Yoshida4, 4, False, 3, general=False,
               error_inputs=_splitting_errors(tidal.Yoshida4)),
    SolverInfo(tidal.ImplicitMidpoint, 2, False, 3, error_inputs=_implicit_midpoint_errors),
    SolverInfo(tidal.Rodas5P, 5, True, 4, error_inputs=_rosenbrock_errors(tidal.Rodas5P)),
    SolverInfo(tidal.Rodas4P, 4, True, 3, error_inputs=_rosenbrock_errors(tidal.Rodas4P)),
    SolverInfo(tidal.Rosenbrock23, 2, True, 2,
               error_inputs=_rosenbrock_errors(tidal.Rosenbrock23)),
    SolverInfo(tidal.Auto, 5, True, 4, error_inputs=_auto_errors),
    *(SolverInfo(cls, cls.implicit.order, False, 3, error_inputs=_newton_errors(cls))
      for cls in (S.ImplicitEuler, S.Trapezoid, S.RadauIIA3, S.RadauIIA5, S.GL4, S.GL6,
                  S.SDIRK2, S.TRBDF2)),
]
#: methods for any f: what the generic accuracy, convergence and dense-output tests run
GENERAL_DB = [info for info in SOLVER_DB if info.general]
ADAPTIVE_DB = [info for info in SOLVER_DB if info.adaptive]
#: the symplectic methods (test_symplectic.py)
SYMPLECTIC_DB = [info for info in SOLVER_DB
                 if info.cls in (tidal.Leapfrog, tidal.Yoshida4, tidal.ImplicitMidpoint)]


@dataclass(frozen=True)
class AdjointInfo:
    cls: type[tidal.adjoint.Adjoint]
    #: an instance that differentiates the given tensors
    make: Callable[[list[torch.Tensor]], tidal.adjoint.Adjoint]
    #: the gradient of the discrete solve (equal to backprop's to round-off)
    exact: bool
    events: bool
    dense: bool
    error_inputs: Callable[[], list[ErrorInput]] = field(default=lambda: [])

    @property
    def id(self) -> str:
        return self.cls.name


def _no_dense(cls: type) -> Callable[[], list[ErrorInput]]:
    return lambda: [ErrorInput("dense output", _solve(adjoint=cls(), dense=True),
                               tidal.IncompatibleOptionsError, r"dense=True")]


def _checkpoint_errors() -> list[ErrorInput]:
    return [*_no_dense(tidal.CheckpointAdjoint)(),
            *(ErrorInput(f"checkpoints={n!r}", lambda n=n: tidal.CheckpointAdjoint(n),
                         tidal.InvalidArgumentError, r"checkpoints") for n in (0, -1, 2.5, True))]


def _backsolve_errors() -> list[ErrorInput]:
    per_element = tidal.PIDController(rtol=torch.full((2, 2), 1e-6, dtype=F64), atol=1e-8)
    return [*_no_dense(tidal.BacksolveAdjoint)(),
            ErrorInput("a terminal event", _solve(adjoint=tidal.BacksolveAdjoint(),
                                                  event=lambda t, y: y.sum() - 1.0),
                       tidal.IncompatibleOptionsError, r"event"),
            ErrorInput("per-element tolerances without its own controller",
                       _solve(adjoint=tidal.BacksolveAdjoint(), controller=per_element),
                       tidal.IncompatibleOptionsError, r"BacksolveAdjoint\(controller="),
            ErrorInput("params that are not tensors",
                       _solve(adjoint=tidal.BacksolveAdjoint(params=[1.0])),
                       tidal.InvalidArgumentError, r"params")]


ADJOINT_DB = [
    AdjointInfo(tidal.BackpropAdjoint, lambda params: tidal.BackpropAdjoint(), exact=True,
                events=True, dense=True),
    AdjointInfo(tidal.CheckpointAdjoint, lambda params: tidal.CheckpointAdjoint(3), exact=True,
                events=True, dense=False, error_inputs=_checkpoint_errors),
    AdjointInfo(tidal.BacksolveAdjoint, lambda params: tidal.BacksolveAdjoint(params=params),
                exact=False, events=False, dense=False, error_inputs=_backsolve_errors),
]


@dataclass(frozen=True)
class ControllerInfo:
    name: str  # in tidal.CONTROLLERS
    make: Callable[[], tidal.controllers.StepSizeController]
    error_inputs: Callable[[], list[ErrorInput]] = field(default=lambda: [])


def _pid_errors() -> list[ErrorInput]:
    bad = [("rtol", -1.0), ("atol", float("nan")), ("safety", 0.0), ("factor_min", 1.5),
           ("factor_max", 0.5), ("dt_min", -1.0), ("dt_max", 0.0), ("dt0", 0.0)]
    inputs = [ErrorInput(f"{name}={value}",
                         lambda name=name, value=value: tidal.PIDController(
                             **{"rtol": 1e-6, "atol": 1e-8, name: value}),
                         tidal.InvalidArgumentError, rf"PIDController\({name}=")
              for name, value in bad]
    return [*inputs,
            ErrorInput("both tolerances zero", lambda: tidal.PIDController(0.0, 0.0),
                       tidal.InvalidArgumentError, r"at least one tolerance"),
            ErrorInput("dt_min above dt_max",
                       lambda: tidal.PIDController(1e-6, 1e-8, dt_min=1.0, dt_max=0.5),
                       tidal.InvalidArgumentError, r"dt_min"),
            ErrorInput("tolerances that do not broadcast to the state",
                       _solve(controller=tidal.PIDController(
                           rtol=torch.ones(3, dtype=F64) * 1e-6, atol=1e-8)),
                       tidal.InvalidArgumentError, r"does not broadcast"),
            ErrorInput("infinite jump times",
                       lambda: tidal.PIDController(1e-6, 1e-8, jump_ts=[float("inf")]),
                       tidal.InvalidArgumentError, r"jump_ts")]


def _constant_errors() -> list[ErrorInput]:
    return [ErrorInput(f"dt={dt!r}", lambda dt=dt: tidal.ConstantStepSize(dt),
                       tidal.InvalidArgumentError, r"ConstantStepSize\(dt=")
            for dt in (0.0, -0.1, float("nan"), "0.1", None, True)]


def _step_to_errors() -> list[ErrorInput]:
    return [ErrorInput("no times", lambda: tidal.StepTo([]), tidal.InvalidArgumentError,
                       r"StepTo\(ts=")]


CONTROLLER_DB = [
    ControllerInfo("pid", lambda: tidal.PIDController(rtol=1e-6, atol=1e-8), _pid_errors),
    ControllerInfo("constant", lambda: tidal.ConstantStepSize(0.1), _constant_errors),
    ControllerInfo("step_to", lambda: tidal.StepTo([0.0, 0.5, 1.0]), _step_to_errors),
]


@dataclass(frozen=True)
class ModelInfo:
    """A model kind (a class of `tidal.models`): `make()` builds a small one with the models'
    defaults, `call(model)` runs it once and returns a tensor; `saveable`: its `config()`
    rebuilds it through `tidal.models.registry`; `solves_odes`: it holds a solver, controller
    and adjoint and so takes the models' shared defaults (an SDE model or a building block
    does not)."""

    cls: type[torch.nn.Module]
    make: Callable[[], torch.nn.Module]
    call: Callable[[torch.nn.Module], torch.Tensor]
    saveable: bool = True
    solves_odes: bool = True
    error_inputs: Callable[[], list[ErrorInput]] = field(default=lambda: [])

    @property
    def id(self) -> str:
        return self.cls.__name__


def _linear_known(t: torch.Tensor, y: torch.Tensor, p: dict) -> torch.Tensor:
    return -p["k"] * y


def _lotka_known() -> Callable:
    from tidal.models.ude import KNOWN_PHYSICS

    return KNOWN_PHYSICS["lotka-volterra-linear"].equations


def _trajectory(model: torch.nn.Module) -> torch.Tensor:
    return model(torch.full((3, 2), 0.5), torch.linspace(0.0, 0.5, 4))


def _object_errors(make: Callable[..., object], name: str) -> list[ErrorInput]:
    """Names where the Python API takes objects, and a fixed-step solver without a step."""
    return [ErrorInput(f"{argument} given by name", lambda argument=argument, value=value:
                       make(**{argument: value}), tidal.InvalidArgumentError,
                       rf"{name}\({argument}='{value}'\).*tidal\.registry\.{argument}")
            for argument, value in (("solver", "tsit5"), ("controller", "pid"),
                                    ("adjoint", "checkpoint"))] + [
        ErrorInput("a fixed-step solver without a controller",
                   lambda: make(solver=tidal.RK4()), tidal.InvalidArgumentError,
                   rf"{name}\(solver=.*ConstantStepSize")]


def _polynomial_errors() -> list[ErrorInput]:
    from tidal.models import PolynomialODE

    def make(**options: object) -> object:
        return PolynomialODE.from_terms(_POLYNOMIAL, ("x", "y"), **options)

    return [*_object_errors(make, "PolynomialODE"),
            ErrorInput("a term that is not a monomial of the states",
                       lambda: PolynomialODE.from_terms({"dx": {"z": 1.0}}, ("x", "y")),
                       tidal.InvalidArgumentError, r"'z' is not a monomial")]


_POLYNOMIAL = {"dx": {"x": -1.0, "x y": 0.5}, "dy": {"y": -0.5, "1": 0.2}}


def _neural_ode_errors() -> list[ErrorInput]:
    def make(**options: object) -> object:
        return tidal.NeuralODE(tidal.nn.MLP(2, width=4), **options)

    class Field(torch.nn.Module):
        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return -y

    tuned = tidal.PIDController(rtol=1e-4, atol=1e-6, pcoeff=0.1, icoeff=0.3)
    return [*_object_errors(make, "NeuralODE"),
            ErrorInput("config() of an unregistered field",
                       lambda: tidal.NeuralODE(Field()).config(), tidal.InvalidArgumentError,
                       r"NeuralODE.config\(\)`: the vector field Field cannot be described"),
            ErrorInput("config() of a controller that is not plain data",
                       lambda: make(controller=tuned).config(), tidal.InvalidArgumentError,
                       r"NeuralODE.config\(\)`: the controller .* cannot be saved")]


def _hamiltonian_errors() -> list[ErrorInput]:
    from tidal.models import HamiltonianNN

    def make(**options: object) -> object:
        return HamiltonianNN.mlp(1, width=4, **options)

    return [*_object_errors(make, "HamiltonianNN")[:3],
            ErrorInput("a splitting with a non-separable H",
                       lambda: make(solver=tidal.Leapfrog()), tidal.IncompatibleOptionsError,
                       r"separable")]


def _ude_errors() -> list[ErrorInput]:
    from tidal.models import UDE

    def make(**options: object) -> object:
        return UDE(_linear_known, None, {"k": 1.0}, **options)

    return [*_object_errors(make, "UDE"),
            ErrorInput("a parameter name that is not an identifier",
                       lambda: UDE(_linear_known, None, {"1k": 1.0}),
                       tidal.InvalidArgumentError, r"parameter names"),
            ErrorInput("a non-finite initial value",
                       lambda: UDE(_linear_known, None, {"k": float("nan")}),
                       tidal.InvalidArgumentError, r"params=\{'k': nan\}"),
            ErrorInput("config() of unregistered known terms", lambda: make().config(),
                       tidal.InvalidArgumentError, r"known terms are Python code")]


def _cnf_errors() -> list[ErrorInput]:
    def make(**options: object) -> object:
        return tidal.CNF(tidal.nn.MLP(2, width=4, time_input=True), **options)

    return [*_object_errors(make, "CNF"),
            ErrorInput("an unknown trace", lambda: make(trace="trace"),
                       tidal.InvalidArgumentError, r"trace='trace'"),
            ErrorInput("t1 = 0", lambda: make(t1=0), tidal.InvalidArgumentError, r"t1=0")]


def _neural_sde() -> torch.nn.Module:
    from tidal.models import NeuralSDE, PositiveDiffusion

    return NeuralSDE(tidal.nn.MLP(2, width=4), PositiveDiffusion(tidal.nn.MLP(2, width=4)),
                     dt=0.1)


def _neural_sde_errors() -> list[ErrorInput]:
    from tidal.models import NeuralSDE

    return [ErrorInput("dt = 0", lambda: NeuralSDE(tidal.nn.MLP(2), tidal.nn.MLP(2), dt=0),
                       tidal.InvalidArgumentError, r"NeuralSDE\(dt=0\)"),
            ErrorInput("ys without a batch axis",
                       lambda: _neural_sde().transition_nll(torch.zeros(4, 2),
                                                            torch.arange(4.0)),
                       tidal.InvalidArgumentError, r"needs ys \[T, B, d\]")]


def _sequences() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Times [4, 2], values and mask [4, 2, 2] of two irregular, partly observed series."""
    g = torch.Generator().manual_seed(0)
    times = torch.rand(4, 2, generator=g).cumsum(0)
    return times, torch.randn(4, 2, 2, generator=g), torch.rand(4, 2, 2, generator=g) < 0.7


def _sequence_models() -> list[ModelInfo]:
    from tidal.models import ODERNN, GRUDelta, LatentODE, LatentSDE, NeuralCDE, ODEBlock

    def on_sequences(model: torch.nn.Module) -> torch.Tensor:
        return model(*_sequences())

    def latent(model: torch.nn.Module) -> torch.Tensor:
        times, values, mask = _sequences()
        return model(times, values, mask, times)

    return [
        ModelInfo(ODEBlock, lambda: ODEBlock(tidal.nn.MLP(4, width=4), augment=1),
                  lambda block: block(torch.full((5, 3), 0.5)), saveable=False,
                  solves_odes=False, error_inputs=lambda: [ErrorInput(
                      "negative augment", lambda: ODEBlock(tidal.nn.MLP(3), augment=-1),
                      tidal.InvalidArgumentError, r"augment")]),
        ModelInfo(ODERNN, lambda: ODERNN(2, 3, width=4), on_sequences, saveable=False,
                  solves_odes=False),
        ModelInfo(GRUDelta, lambda: GRUDelta(2, 3), on_sequences, saveable=False,
                  solves_odes=False),
        ModelInfo(LatentODE, lambda: LatentODE(2, 2, 3, width=4), latent, saveable=False,
                  solves_odes=False, error_inputs=lambda: [ErrorInput(
                      "obs_std = 0", lambda: LatentODE(2, 2, 3, obs_std=0.0),
                      tidal.InvalidArgumentError, r"LatentODE\(obs_std=0.0\)")]),
        ModelInfo(LatentSDE, lambda: LatentSDE(2, 2, context_size=3, hidden_size=3, width=4,
                                               dt=0.1),
                  lambda model: model.loss(*_sequences(), seed=0), saveable=False,
                  solves_odes=False, error_inputs=lambda: [ErrorInput(
                      "dt = 0", lambda: LatentSDE(2, 2, dt=0), tidal.InvalidArgumentError,
                      r"LatentSDE\(dt=0\)")]),
        ModelInfo(NeuralCDE, lambda: NeuralCDE(2, 3, 2, width=4, depth=1), on_sequences,
                  saveable=False, solves_odes=False, error_inputs=lambda: [ErrorInput(
                      "an unknown path", lambda: NeuralCDE(2, 3, 2, path="quintic"),
                      tidal.InvalidArgumentError, r"quintic")]),
    ]


def _models() -> list[ModelInfo]:
    from tidal.models import (
        CNF,
        UDE,
        AugmentedNeuralODE,
        Ensemble,
        HamiltonianNN,
        NeuralODE,
        NeuralSDE,
        PolynomialODE,
        PositiveDiffusion,
    )

    return [
        ModelInfo(NeuralODE, lambda: NeuralODE(tidal.nn.MLP(2, width=4)), _trajectory,
                  error_inputs=_neural_ode_errors),
        ModelInfo(HamiltonianNN, lambda: HamiltonianNN.mlp(1, separable=True, width=4),
                  _trajectory, error_inputs=_hamiltonian_errors),
        ModelInfo(UDE, lambda: UDE(_lotka_known(), tidal.nn.MLP(2, width=4),
                                   {"alpha": 1.0, "gamma": 1.0}), _trajectory,
                  error_inputs=_ude_errors),
        ModelInfo(PolynomialODE, lambda: PolynomialODE.from_terms(_POLYNOMIAL, ("x", "y")),
                  _trajectory, error_inputs=_polynomial_errors),
        ModelInfo(CNF, lambda: CNF(tidal.nn.MLP(2, width=4, time_input=True)),
                  lambda cnf: cnf.log_prob(torch.full((3, 2), 0.5)), saveable=False,
                  error_inputs=_cnf_errors),
        ModelInfo(Ensemble, lambda: Ensemble([NeuralODE(tidal.nn.MLP(2, width=4))
                                              for _ in range(2)]), _trajectory,
                  error_inputs=lambda: [ErrorInput(
                      "no members", lambda: Ensemble([]), tidal.InvalidArgumentError,
                      r"Ensemble\(members=...\)` needs 1 to")]),
        ModelInfo(AugmentedNeuralODE, lambda: AugmentedNeuralODE(tidal.nn.MLP(3, width=4), 1),
                  _trajectory, error_inputs=lambda: [ErrorInput(
                      "no extra states", lambda: AugmentedNeuralODE(tidal.nn.MLP(2), 0),
                      tidal.InvalidArgumentError, r"augment=0")]),
        ModelInfo(NeuralSDE, _neural_sde,
                  lambda sde: sde.sample(torch.full((3, 2), 0.5), torch.linspace(0, 0.5, 4),
                                         seed=0),
                  saveable=False, solves_odes=False, error_inputs=_neural_sde_errors),
        ModelInfo(PositiveDiffusion, lambda: PositiveDiffusion(tidal.nn.MLP(2, width=4)),
                  lambda g: g(torch.zeros(()), torch.full((3, 2), 0.5)), saveable=False,
                  solves_odes=False),
        *_sequence_models(),
    ]


MODEL_DB = _models()
