"""From trajectories to a run directory: split, build the model, fit, save. The command line's
`fit` and `demo` are thin wrappers around `train_run`."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tidal import registry
from tidal._errors import InvalidArgumentError
from tidal.controllers import ConstantStepSize, PIDController
from tidal.controllers.base import StepSizeController
from tidal.data import SYSTEMS, Scaling, Trajectories
from tidal.distributed import World
from tidal.models import HamiltonianNN, NeuralODE
from tidal.models.augmented import AugmentedNeuralODE
from tidal.models.ude import KNOWN_PHYSICS, UDE
from tidal.nn import MLP
from tidal.registry import SOLVERS
from tidal.training.auto import choose
from tidal.training.checkpoint import CHECKPOINT, load_checkpoint
from tidal.training.collocation import build_prefitted, build_with_linear_start
from tidal.training.config import TrainConfig
from tidal.training.discovery import discover as discover_formula
from tidal.training.ensemble import EnsembleOptions, fit_ensemble
from tidal.training.fit import FitResult, fit, write_initial_states
from tidal.training.rates import with_rate_scales
from tidal.training.refit import refit as refit_model
from tidal.training.run import (
    CONFIG,
    KIND,
    build_model,
    read_config,
    read_split,
    read_train,
    save_run,
    write_config,
    write_splits,
)
from tidal.training.run_directory import RunDirectory
from tidal.training.time_split import TIME_SPLIT_BELOW, split_in_time, split_kind
from tidal.training.trainer import FINAL_STATES


@dataclass(frozen=True)
class ModelOptions:
    """The model `train_run` builds.

    kind: "neural-ode" (an MLP vector field), "hamiltonian" (`HamiltonianNN`: an MLP energy,
    optionally `separable` H = T(p) + V(q); state = (q, p) halves) or "ude" (`UDE`: the
    registered `known` terms, with `params` as initial values of the learned physical
    parameters, plus an MLP correction; trained in the data's units). solver "auto" picks
    Tsit5, or for a neural ODE with per-species rates (stiff data) `tidal.Auto` (Tsit5
    switching to Rodas5P where the field is stiff), or for a Hamiltonian leapfrog
    (separable) / implicit midpoint, with step `dt`.
    augment: extra unobserved states of a "neural-ode" (`AugmentedNeuralODE`), e.g. 1 for
    one observed variable that oscillates; 0: none.
    rate_scale: per-species rate scales of a "neural-ode"'s outputs (`tidal.training.rates`):
    "species", "off", or "auto" (on when the species' time scales are decades apart);
    `train_run` resolves it on the training data into `output_scale` (`MLP(output_scale=)`).
    linear_term: an affine term beside a "neural-ode"'s network (`MLP(linear_term=True)`),
    started at the least-squares fit of smoothing-spline rates and exempt from weight
    decay; None: `train_run` turns it on for few series (`with_small_data_model`).
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
    augment: int = 0
    rate_scale: str = "auto"
    output_scale: tuple[float, ...] | None = None
    linear_term: bool | None = None

    def build(self, n_states: int, seed: int) -> NeuralODE:
        if self.solver != "auto" and self.solver not in SOLVERS:
            raise InvalidArgumentError(
                f"`--solver {self.solver}` is not known; choose one of {sorted(SOLVERS)}.")
        if self.kind not in MODEL_KINDS:
            raise InvalidArgumentError(
                f"`--model {self.kind}` is not known; choose one of {list(MODEL_KINDS)}.")
        if self.augment and self.kind != "neural-ode":
            raise InvalidArgumentError(f"`--augment {self.augment}` applies to `--model "
                                       f"neural-ode`, not `--model {self.kind}`.")
        if self.linear_term and self.kind != "neural-ode":
            raise InvalidArgumentError("`--linear-term` applies to `--model neural-ode`, not "
                                       f"`--model {self.kind}`.")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return MODEL_KINDS[self.kind](self, n_states)

    def solve_objects(self, default_solver: str | None) -> dict[str, Any]:
        """The solver (None: the model's own default), controller and adjoint objects these
        names and numbers describe (`tidal.registry`): a `PIDController(rtol, atol)` for an
        adaptive solver, else `ConstantStepSize(dt)`."""
        name = default_solver if self.solver == "auto" else self.solver
        solver = None if name is None else registry.solver(name)
        adaptive = solver is not None and solver.adaptive
        controller: StepSizeController = (PIDController(rtol=self.rtol, atol=self.atol)
                                          if adaptive else ConstantStepSize(self.dt))
        return {"solver": solver, "controller": controller,
                "adjoint": registry.adjoint(self.adjoint)}

    def needs_identity_scaling(self) -> bool:
        return self.kind == "ude"


def _neural_ode(options: ModelOptions, n_states: int) -> NeuralODE:
    field = MLP(n_states + options.augment, width=options.width, depth=options.depth,
                activation=options.activation, time_input=options.time_input,
                output_scale=options.output_scale, linear_term=bool(options.linear_term))
    if options.augment:
        return AugmentedNeuralODE(field, options.augment, **options.solve_objects("tsit5"))
    # per-species rates are on for stiff data, where Tsit5 stops at max_steps (ROBER: at
    # t ~ 900 in the first epoch): there `tidal.Auto`, Tsit5 switching to Rodas5P
    default = "tsit5" if options.output_scale is None else "auto"
    return NeuralODE(field, **options.solve_objects(default))


def _hamiltonian(options: ModelOptions, n_states: int) -> NeuralODE:
    if n_states % 2:
        raise InvalidArgumentError(
            f"`--model hamiltonian` needs the state as (q, p) halves; the data has "
            f"{n_states} states. Give an even number of state columns, positions first.")
    return HamiltonianNN.mlp(n_states // 2, separable=options.separable, width=options.width,
                             depth=options.depth, activation=options.activation,
                             **options.solve_objects(None))


def _ude(options: ModelOptions, n_states: int) -> NeuralODE:
    if options.known is None or options.known not in KNOWN_PHYSICS:
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
    return UDE(known.equations, correction, params, **options.solve_objects("tsit5"))


MODEL_KINDS = {"neural-ode": _neural_ode, "hamiltonian": _hamiltonian, "ude": _ude}


def train_run(data: Trajectories, run_dir: str | Path, *, model: ModelOptions | None = None,
              config: TrainConfig | None = None, split: tuple[float, float] = (0.125, 0.125),
              source: dict[str, Any] | None = None, overwrite: bool = False,
              command: str = "fit", progress: bool = True, split_by: str = "auto",
              ensemble: EnsembleOptions | None = None, prefit: bool = False,
              auto: int = 0, refit: bool | None = None, discover: bool = False) -> FitResult:
    """Split `data` by trajectory into train / validation / test, fit a NeuralODE on the
    training part and write the run directory.

    Args:
        data: all trajectories.
        run_dir: the run directory: a new or empty folder, or with `overwrite` an earlier run
            (only the files it lists are deleted; see `RunDirectory`).
        model: the model to build (default `ModelOptions()`).
        config: training configuration (its seed also seeds the split and the weights).
        split: fractions held out for validation and for testing: of the trajectories, or of
            each trajectory's observations when split in time.
        split_by: "trajectory" (hold out whole trajectories), "time" (hold out the last part
            of each trajectory, `tidal.training.time_split`) or "auto": "time" for fewer than
            `TIME_SPLIT_BELOW` trajectories. config.json's data.split records which.
        ensemble: train an `Ensemble` (`tidal.training.ensemble`) instead of one model.
        prefit: pre-train the vector field on smoothing-spline derivative estimates
            (`tidal.training.collocation`) before fitting trajectories; recorded in
            config.json's data.prefit.
        auto: choose width, depth, activation, weight decay and learning rate among this many
            candidates on the validation data first (`tidal.training.auto`; 0: off); the
            search is recorded in config.json's data.auto.
        refit: after a split in time, fine-tune the chosen model on the training and
            validation observations (`tidal.training.refit`; one model, not an ensemble);
            None: when there is one training series (`REFIT_BELOW`). Recorded in
            config.json's data.refit.
        discover: after the fit, explain the learned field by sparse polynomials, fit them
            to the data again and keep the sparsest that validates about as well as the best
            (`tidal.training.discovery`; before the refit, which then refits the model kept).
            Needs validation data; one model, not an ensemble, without augmented states.
            Recorded in config.json's data.discover.
        source: what the data is, stored in config.json: e.g. {"path": ...} (that file is
            never deleted by `overwrite`) or {"system": "toggle-switch"} (a built-in system
            enables checks against the truth; it must match the data's states).
        command: the command that made the run, recorded in its marker.
    """
    model = ModelOptions() if model is None else model
    config = TrainConfig() if config is None else config
    _check_arguments(data, model, config, split)
    source = source or {}
    if "system" in source:
        check_system(data, source["system"])
    kind = split_kind(len(data), split_by)
    train, val, test = (split_in_time(data, *split) if kind == "time"
                        else _split(data, split, config.seed))
    config = small_data_config(config, len(train), model)
    scaling = (Scaling((0.0,) * data.n_states, (1.0,) * data.n_states)
               if model.needs_identity_scaling() else Scaling.fit(train))
    world = World.current()  # under torchrun rank 0 writes the run, the others read it
    if discover and (ensemble is not None or model.augment or val is None):
        raise InvalidArgumentError(
            "--discover explains one model's field over the data's states and chooses on the "
            "validation data: it needs validation data (--val > 0) and applies to one model "
            "without augmented states (no --ensemble, no --augment).")
    if world.distributed and (ensemble is not None or auto or discover):
        raise InvalidArgumentError("An ensemble (--ensemble), a search (--auto) and a formula "
                                   "search (--discover) train in one process; run them "
                                   "without torchrun or --nproc.")
    model = with_small_data_model(with_rate_scales(model, train, scaling), len(train))
    searched = None
    if auto:
        model, config, searched = choose(model, config, train, val, scaling, data.n_states, auto)
    network = model.build(data.n_states, config.seed)
    info = {"state_names": list(data.state_names), **source, "split": kind,
            "held_out": list(split), "prefit": prefit,
            **({"auto": searched} if searched is not None else {})}
    if world.leader:
        run = RunDirectory.create(run_dir, KIND, command=command, overwrite=overwrite,
                                  keep=[source["path"]] if "path" in source else [])
        write_splits(run, {"train": train, "val": val, "test": test})
        write_config(run, network, scaling, data=info, train_config=config.to_dict())
    world.barrier()
    if not world.leader:
        run = RunDirectory.open(run_dir, KIND)
    build = functools.partial(model.build, data.n_states)
    # a start from the data (collocation pre-fit, or the linear term's least-squares fit)
    start = (build_prefitted if prefit else build_with_linear_start if model.linear_term
             else None)
    if start is not None:
        build = functools.partial(start, build, train, scaling)
    if ensemble is None:
        result = fit(network if start is None else build(config.seed), train, val=val,
                     config=config, scaling=scaling, run_dir=run, progress=progress)
        if discover and result.status not in ("diverged", "interrupted"):
            assert val is not None
            result, info["discover"] = discover_formula(result, train, val, progress)
            if result.initial_states is not None and info["discover"]["kept"] == "formula":
                write_initial_states(run, train, result.initial_states)
        if (len(train) < REFIT_BELOW if refit is None else refit) and kind == "time" \
                and not world.distributed:
            result = _refitted(run, result, train, val, scaling, info, progress)
    else:
        result = fit_ensemble(build, train, val=val, config=config, scaling=scaling,
                              options=ensemble, run_dir=run, progress=progress)
    if world.leader:
        _save_result(run, result, info)
    return result


#: `train_run(refit=None)` refits runs split in time with fewer training series than this:
#: on one Lotka-Volterra series the refit lowered the forecast's error on 3 seeds of 3 and
#: the error on all 16 observations on 2 (+1% on the third); on 6 oscillator series it left
#: the held-out error as it was and moved the learned frequency by -3 to +3 points, out of
#: the 5% target on one seed of five (docs/benchmarks.md, "Small data, fifth part").
REFIT_BELOW = 2

#: Multiple-shooting segments of `small_data_config` for one series, and for a few.
SINGLE_SERIES_SEGMENTS = 6
FEW_SERIES_SEGMENTS = 4


#: `with_small_data_model` gives a neural ODE a linear term for fewer training series than
#: this and at least `LINEAR_TERM_FROM`.
LINEAR_TERM_BELOW = TIME_SPLIT_BELOW
LINEAR_TERM_FROM = 2


def with_small_data_model(model: ModelOptions, n_train: int) -> ModelOptions:
    """`model` with its `linear_term` decided where it was left to the default (None): on for
    a neural ODE without augmented states or per-species rates (stiff data, whose rates are
    far from linear) trained on `LINEAR_TERM_FROM` to `LINEAR_TERM_BELOW - 1` series, else
    off.

    On 6 damped-oscillator series the plain network's learned frequency (its linearization
    at the fixed point, where the decayed observations are below the noise) was 1.5-28% off
    on five seeds, within 5% on two; with the linear term started at the splines'
    least-squares fit it is 0.1-1.3% off on all five and the held-out error falls from
    7.2-12.2% to 5.2-5.8% of the range (docs/benchmarks.md, "Small data, sixth part")."""
    if model.linear_term is not None:
        return model
    on = (model.kind == "neural-ode" and not model.augment and model.output_scale is None
          and LINEAR_TERM_FROM <= n_train < LINEAR_TERM_BELOW)
    return dataclasses.replace(model, linear_term=on)


def small_data_config(config: TrainConfig, n_train: int, model: ModelOptions) -> TrainConfig:
    """For fewer than `TIME_SPLIT_BELOW` training series with the default curriculum and no
    shooting (and no augmented states, which restart at zero at every segment's start): a
    multiple-shooting stage first; else `config` unchanged. config.json records what was
    trained.

    One series: `SINGLE_SERIES_SEGMENTS` segments, then the whole series (horizons (1.0,)). On
    one Lotka-Volterra series of 12 training observations the curriculum fits the first 60%
    of the span and then, at the full span, collapses onto a fixed point near the data's mean
    (training loss 0.004 -> 0.8 in standardized units, at every seed, learning rate and
    curriculum tried); segments each started from their own estimated state do not lock into
    that phase error (docs/benchmarks.md, "Small data, third part").

    2 to 11 series: `FEW_SERIES_SEGMENTS` segments, then the default curriculum. On 6 damped
    oscillator series the curriculum alone learned 4.5 times the frequency on one seed of
    three, and shooting then whole series missed the frequency by 6-10%; shooting then the
    curriculum was within 5% of the frequency and 10% held-out error on every seed
    (docs/benchmarks.md, "Small data, fourth part").

    Give other --horizons or --shooting-segments to train otherwise. Runs of fewer epochs
    than the stages this would make are left as they are.
    """
    default = TrainConfig()
    single = n_train == 1
    horizons = (1.0,) if single else default.horizons
    if (n_train >= TIME_SPLIT_BELOW or model.augment
            or config.shooting_segments != default.shooting_segments
            or config.horizons != default.horizons or config.epochs < len(horizons) + 1):
        return config
    return dataclasses.replace(config, horizons=horizons, shooting_segments=(
        SINGLE_SERIES_SEGMENTS if single else FEW_SERIES_SEGMENTS))


def resume_run(run_dir: str | Path, *, epochs: int | None = None,
               progress: bool = True) -> FitResult:
    """Continue the run in `run_dir` from its checkpoint, with its own config, scaling and
    data. `epochs` sets a new total (at least the epochs already trained); the learning-rate
    schedule and the curriculum's stages stretch to it. A run stopped before its first
    checkpoint starts over from epoch 0 with its own settings."""
    run = RunDirectory.open(run_dir, KIND)
    saved = read_config(run)
    if "discover" in saved["data"]:
        raise InvalidArgumentError(f"{run_dir} was fitted with --discover, which follows the "
                                   "network's training with a formula's; its checkpoint is the "
                                   "network's alone and cannot continue both. Fit it again with "
                                   "--overwrite (and more --epochs).")
    if saved["model"]["type"] == "Ensemble":
        raise InvalidArgumentError(f"{run_dir} holds an ensemble, which keeps no checkpoints and "
                                   "cannot be resumed; fit it again with --overwrite.")
    world = World.current()
    if world.leader:
        run.take_over()
    config = TrainConfig.from_dict(saved["train"])
    if epochs is not None:
        try:
            config = dataclasses.replace(config, epochs=epochs)
        except InvalidArgumentError as error:
            reason = str(error).partition("`: ")[2]
            raise InvalidArgumentError(f"`--epochs {epochs}` (epochs={epochs}): {reason}"
                                       ) from None
    where = run.path / CONFIG
    restart = not run.has(CHECKPOINT)
    if not restart:
        snapshot = load_checkpoint(run.file(CHECKPOINT))
        trained = snapshot.get("epoch")
        if isinstance(trained, int) and config.epochs < trained:
            raise InvalidArgumentError(
                f"`--epochs {config.epochs}` (epochs={config.epochs}): the run has already "
                f"trained {trained} epochs; give at least that many.")
        model = build_model(saved, where, weights=snapshot.get("model"),
                            weights_file=run.path / CHECKPOINT)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            model = build_model(saved, where)
    names = saved["data"]["state_names"]
    result = fit(model.train(), read_train(run, names),
                 val=read_split(run, "val", names), config=config,
                 scaling=Scaling.from_dict(saved["scaling"]), run_dir=run,
                 resume=not restart, progress=progress)
    if restart:
        result.message = ("no checkpoint had been saved, so training started over from "
                          f"epoch 0; {result.message}")
    if "refit" in saved["data"] and not world.distributed:
        result = _refitted(run, result, read_train(run, names), read_split(run, "val", names),
                           Scaling.from_dict(saved["scaling"]), saved["data"], progress)
    if world.leader:
        _save_result(run, result, saved["data"])
    return result


def _refitted(run: RunDirectory, result: FitResult, train: Trajectories,
              val: Trajectories | None, scaling: Scaling, info: dict[str, Any],
              progress: bool) -> FitResult:
    """`result` fine-tuned on the validation observations too (`tidal.training.refit`), its
    initial states rewritten in `run` and `info["refit"]` set; `result` (and no refit entry)
    when there is nothing to refit on or the fine-tune did not finish."""
    info.pop("refit", None)
    if result.status in ("diverged", "interrupted"):
        return result
    done = refit_model(result, train, val, scaling, progress=progress)
    if done is None:
        return result
    result, info["refit"] = done
    if result.initial_states is not None:
        write_initial_states(run, train, result.initial_states)
    return result


def check_system(data: Trajectories, system: str) -> None:
    """The built-in `system` must describe `data`: as many states, and when the data's states
    carry the system's names, in the system's order."""
    if system not in SYSTEMS:
        raise InvalidArgumentError(f"`--system {system}` is not known; choose one of "
                                   f"{', '.join(SYSTEMS)}.")
    names = list(SYSTEMS[system].state_names)
    if data.n_states != len(names):
        raise InvalidArgumentError(
            f"`--system {system}` has {len(names)} states ({', '.join(names)}); the data has "
            f"{data.n_states} ({', '.join(data.state_names)}). Give the system the data came "
            "from, or leave --system out.")
    if sorted(data.state_names) == sorted(names) and list(data.state_names) != names:
        raise InvalidArgumentError(
            f"`--system {system}`: the data's states ({', '.join(data.state_names)}) are the "
            f"system's in another order; give them in its order with --states "
            f"{','.join(names)}.")


def _save_result(run: RunDirectory, result: FitResult, info: dict[str, Any]) -> None:
    outcome = {"status": result.status, "message": result.message,
               "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
               "epochs": result.history[-1]["epoch"] if result.history else 0,
               "seconds": result.history[-1]["seconds"] if result.history else 0.0}
    save_run(run, result.model, result.scaling, data=info,
             train_config=result.config.to_dict(), outcome=outcome,
             state=FINAL_STATES[result.status])


def _check_arguments(data: Any, model: Any, config: Any, split: Any, *,
                     owner: str = "train_run", model_name: str = "model",
                     model_kind: type = ModelOptions) -> None:
    """The types of `train_run`'s (or `owner`'s) arguments and the held-out fractions, before
    anything is written."""
    for name, value, kind in (("data", data, Trajectories), (model_name, model, model_kind),
                              ("config", config, TrainConfig)):
        if not isinstance(value, kind):
            hint = (f" Build one from the dict: {kind.__name__}(**{name})."
                    if isinstance(value, dict) else "")
            raise InvalidArgumentError(f"`{owner}({name}=...)` must be a "
                                       f"{kind.__name__}; got {type(value).__name__}.{hint}")
    fractions = tuple(split) if isinstance(split, (tuple, list)) else ()
    if len(fractions) != 2 or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 <= f < 1
            for f in fractions):
        raise InvalidArgumentError(
            f"`{owner}(split={split!r})` (--val, --test) must be two fractions in [0, 1): "
            "the parts held out for validation and for testing, e.g. (0.125, 0.125); 0 holds "
            "out none.")


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
    on 24 of them and hold out 8 for testing. Replaces an earlier demo run in `run_dir`, and
    nothing else: any other non-empty folder is refused."""
    from tidal.data import simulate

    earlier = RunDirectory.find(Path(run_dir))
    if earlier is not None and earlier.command != "demo":
        raise InvalidArgumentError(
            f"{run_dir} holds a run made by `tidal {earlier.command}`, not by `tidal demo`; "
            "the demo replaces only an earlier demo: choose another -o.")
    data = simulate("toggle-switch", 32, n_obs=(20, 40), noise=0.05, irregular=True,
                    seed=seed)
    config = TrainConfig(epochs=epochs or DEMO_EPOCHS, lr=1e-2, horizons=(0.3, 0.6, 1.0),
                         patience=None, seed=seed)
    return train_run(data, run_dir, config=config, split=(0.0, 0.25),
                     source={"system": "toggle-switch", "simulated": True, "seed": seed},
                     overwrite=earlier is not None, command="demo", progress=progress)


DEMO_EPOCHS = 300
