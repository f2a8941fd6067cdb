"""From trajectories to a run directory: split, build the model, fit, save. The command line's
`fit` and `demo` are thin wrappers around `train_run`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tidal._errors import InvalidArgumentError
from tidal.data import Scaling, Trajectories
from tidal.models import HamiltonianNN, NeuralODE
from tidal.models.ude import KNOWN_PHYSICS, UDE
from tidal.nn import MLP
from tidal.registry import SOLVERS
from tidal.training.config import TrainConfig
from tidal.training.fit import FitResult, fit
from tidal.training.run import CONFIG, load_run, save_run


@dataclass(frozen=True)
class ModelOptions:
    """The model `train_run` builds.

    kind: "neural-ode" (an MLP vector field), "hamiltonian" (`HamiltonianNN`: an MLP energy,
    optionally `separable` H = T(p) + V(q); state = (q, p) halves) or "ude" (`UDE`: the
    registered `known` terms, with `params` as initial values of the learned physical
    parameters, plus an MLP correction; trained in the data's units). solver "auto" picks
    Tsit5, or for a Hamiltonian leapfrog (separable) / implicit midpoint, with step `dt`.
    """

    kind: str = "neural-ode"
    width: int = 64
    depth: int = 2
    activation: str = "tanh"
    time_input: bool = False
    solver: str = "auto"
    rtol: float = 1e-4
    atol: float = 1e-6
    adjoint: str = "checkpoint"
    separable: bool = False
    dt: float = 0.05
    known: str | None = None
    params: tuple[tuple[str, float], ...] = ()

    def build(self, n_states: int, seed: int) -> NeuralODE:
        if self.solver != "auto" and self.solver not in SOLVERS:
            raise InvalidArgumentError(
                f"`--solver {self.solver}` is not known; choose one of {sorted(SOLVERS)}.")
        if self.kind not in MODEL_KINDS:
            raise InvalidArgumentError(
                f"`--model {self.kind}` is not known; choose one of {list(MODEL_KINDS)}.")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return MODEL_KINDS[self.kind](self, n_states)

    def solver_or(self, default: str | None) -> Any:
        name = default if self.solver == "auto" else self.solver
        return None if name is None else SOLVERS[name]()

    def needs_identity_scaling(self) -> bool:
        return self.kind == "ude"


def _neural_ode(options: ModelOptions, n_states: int) -> NeuralODE:
    field = MLP(n_states, width=options.width, depth=options.depth,
                activation=options.activation, time_input=options.time_input)
    solver = options.solver_or("tsit5")
    return NeuralODE(field, solver=solver, rtol=options.rtol, atol=options.atol,
                     dt=None if solver.adaptive else options.dt, adjoint=options.adjoint)


def _hamiltonian(options: ModelOptions, n_states: int) -> NeuralODE:
    if n_states % 2:
        raise InvalidArgumentError(
            f"`--model hamiltonian` needs the state as (q, p) halves; the data has "
            f"{n_states} states. Give an even number of state columns, positions first.")
    return HamiltonianNN.mlp(n_states // 2, separable=options.separable, width=options.width,
                             depth=options.depth, activation=options.activation,
                             solver=options.solver_or(None), dt=options.dt, rtol=options.rtol,
                             atol=options.atol, adjoint=options.adjoint)


def _ude(options: ModelOptions, n_states: int) -> NeuralODE:
    if options.known not in KNOWN_PHYSICS:
        raise InvalidArgumentError(
            f"`--model ude` needs `--known NAME` with one of {sorted(KNOWN_PHYSICS)}; got "
            f"{options.known!r}.")
    known = KNOWN_PHYSICS[options.known]
    params = {**known.params, **dict(options.params)}
    unknown = sorted(set(params) - set(known.params))
    if unknown:
        raise InvalidArgumentError(
            f"`--param`: {unknown} are not parameters of {known.name} "
            f"(it has {sorted(known.params)}).")
    correction = MLP(n_states, width=options.width, depth=options.depth,
                     activation=options.activation, time_input=options.time_input)
    solver = options.solver_or("tsit5")
    return UDE(known.equations, correction, params, solver=solver, rtol=options.rtol,
               atol=options.atol, dt=None if solver.adaptive else options.dt,
               adjoint=options.adjoint)


MODEL_KINDS = {"neural-ode": _neural_ode, "hamiltonian": _hamiltonian, "ude": _ude}


def train_run(data: Trajectories, run_dir: str | Path, *, model: ModelOptions | None = None,
              config: TrainConfig | None = None, split: tuple[float, float] = (0.125, 0.125),
              source: dict[str, Any] | None = None, overwrite: bool = False,
              resume: bool = False, progress: bool = True) -> FitResult:
    """Split `data` by trajectory into train / validation / test, fit a NeuralODE on the
    training part and write the run directory.

    Args:
        data: all trajectories.
        run_dir: the run directory; an existing run is refused unless `overwrite` or `resume`.
        model: the model to build (default `ModelOptions()`).
        config: training configuration (its seed also seeds the split and the weights).
        split: fractions of trajectories held out for validation and for testing.
        source: what the data is, stored in config.json: e.g. {"path": ...} or
            {"system": "toggle-switch"} (a built-in system enables checks against the truth).
        resume: continue the run in `run_dir` from its checkpoint (its config.json decides the
            model, the scaling and the split).
    """
    run_dir = Path(run_dir)
    if resume:
        return _resume(run_dir, config, progress)
    if (run_dir / CONFIG).exists():
        if not overwrite:
            raise InvalidArgumentError(
                f"{run_dir} already holds a run; pass --overwrite (overwrite=True) to replace "
                "it, or --resume to continue it.")
        shutil.rmtree(run_dir)
    model = model or ModelOptions()
    config = config or TrainConfig()
    train, val, test = _split(data, split, config.seed)
    network = model.build(data.n_states, config.seed)
    scaling = (Scaling((0.0,) * data.n_states, (1.0,) * data.n_states)
               if model.needs_identity_scaling() else Scaling.fit(train))
    info = {"state_names": list(data.state_names), **(source or {})}
    splits = {"train": train, "val": val, "test": test}
    save_run(run_dir, network, scaling, data=info, train_config=config.to_dict(), splits=splits)
    result = fit(network, train, val=val, config=config, scaling=scaling, run_dir=run_dir,
                 progress=progress)
    _save_result(run_dir, result, info)
    return result


def _resume(run_dir: Path, config: TrainConfig | None, progress: bool) -> FitResult:
    run = load_run(run_dir)
    config = config or TrainConfig.from_dict(run.config["train"])
    model = run.model.train()
    result = fit(model, run.data("train"), val=run.data("val"), config=config,
                 scaling=run.scaling, run_dir=run_dir, resume=True, progress=progress)
    _save_result(run_dir, result, run.config["data"])
    return result


def _save_result(run_dir: Path, result: FitResult, info: dict[str, Any]) -> None:
    outcome = {"status": result.status, "message": result.message,
               "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
               "epochs": result.history[-1]["epoch"] if result.history else 0,
               "seconds": result.history[-1]["seconds"] if result.history else 0.0}
    save_run(run_dir, result.model, result.scaling, data=info,
             train_config=result.config.to_dict(), outcome=outcome)


def _split(data: Trajectories, split: tuple[float, float], seed: int
           ) -> tuple[Trajectories, Trajectories | None, Trajectories | None]:
    val_fraction, test_fraction = split
    n = len(data)
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    if n - n_val - n_test < 1:
        raise InvalidArgumentError(
            f"Holding out {n_val} validation and {n_test} test trajectories of {n} leaves none "
            "to train on; lower the fractions or give more trajectories.")
    counts = [n - n_val - n_test] + [c for c in (n_val, n_test) if c > 0]
    parts = list(data.split(*counts, seed=seed)) if len(counts) > 1 else [data]
    train = parts.pop(0)
    val = parts.pop(0) if n_val > 0 else None
    test = parts.pop(0) if n_test > 0 else None
    return train, val, test


def run_demo(run_dir: str | Path, *, epochs: int | None = None, progress: bool = True,
             seed: int = 0) -> FitResult:
    """The README's main job: simulate the genetic toggle switch (32 trajectories, 20-40
    irregular observations each on [0, 10], noise 5% of each state's range), fit a NeuralODE
    on 24 of them and hold out 8 for testing. Replaces an earlier demo run in `run_dir`."""
    from tidal.data import simulate

    data = simulate("toggle-switch", 32, n_obs=(20, 40), noise=0.05, irregular=True,
                    seed=seed)
    config = TrainConfig(epochs=epochs or DEMO_EPOCHS, lr=1e-2, horizons=(0.3, 0.6, 1.0),
                         patience=None, seed=seed)
    return train_run(data, run_dir, config=config, split=(0.0, 0.25),
                     source={"system": "toggle-switch", "simulated": True, "seed": seed},
                     overwrite=True, progress=progress)


DEMO_EPOCHS = 300
