"""Checkpoints and weights: saved atomically into a run and loaded without executing code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (model, optimizer and
scheduler state_dicts, the RNG state, the loss history), written with `torch.save` to a
temporary file and renamed, and read with `torch.load(weights_only=True)`, which refuses
anything but those plain types: a checkpoint file cannot run code when loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from tidal._errors import InvalidArgumentError
from tidal.training.run_directory import RunDirectory

CHECKPOINT = "checkpoint.pt"
MAX_PARAMETERS = 10**8  # 800 MB in float64; far above what these models need

Model = TypeVar("Model", bound=torch.nn.Module)


def save_checkpoint(run: RunDirectory, name: str, state: dict[str, Any]) -> None:
    """Write `state` as the run's file `name` (e.g. "checkpoint.pt", "model.pt")."""
    with run.writing(name) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(
            f"No checkpoint at {path}; train without `resume` first, or give the run "
            "directory that holds checkpoint.pt.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged or unsafe files
        raise InvalidArgumentError(
            f"{path} cannot be loaded: it is empty, truncated or damaged, or it holds objects "
            "other than tensors and plain values, which tidal refuses to load because loading "
            "them could run code.") from error
    if not isinstance(state, dict):
        raise InvalidArgumentError(f"{path} holds a {type(state).__name__}, not the dict "
                                   "tidal writes; the file was not written by tidal.")
    return state


def has_checkpoint_to_resume(run: RunDirectory, total: int, option: str, unit: str) -> bool:
    """Whether `run` holds a checkpoint to continue from; refuses a new total of `total`
    `unit` (given on the command line as `option`, e.g. "--steps 40") below those the
    checkpoint has already trained."""
    if not run.has(CHECKPOINT):
        return False
    trained = load_checkpoint(run.file(CHECKPOINT)).get("epoch")
    if isinstance(trained, int) and total < trained:
        raise InvalidArgumentError(f"`{option}`: the run has already trained {trained} {unit}; "
                                   "give at least that many.")
    return True


def checked_weights(weights: Any, expected: dict[str, torch.Size], where: str) -> None:
    """Check a state_dict against the shapes a model expects: the same names and shapes,
    finite floating-point tensors of one dtype. `where` names the file in the message."""
    def fail(problem: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{where}: {problem}; the file does not match the run's "
                                    "config.json (damaged or edited?).")

    if not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise fail("expected a dict of named tensors")
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise fail(f"missing tensors {missing[:3]}, unexpected tensors {extra[:3]}")
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise fail(f"tensor {name} has shape {tuple(weights[name].shape)}, the model "
                       f"needs {tuple(shape)}")
    dtypes = {tensor.dtype for tensor in weights.values()}
    if len(dtypes) > 1 or not dtypes <= {torch.float32, torch.float64}:
        raise fail(f"tensors of dtype {sorted(map(str, dtypes))}; expected all float32 or all "
                   "float64")
    if not all(bool(torch.isfinite(tensor).all()) for tensor in weights.values()):
        raise fail("some weights are NaN or infinite")


def build_with_weights(build: Callable[[], Model], config_file: Path,
                       weights: dict[str, Any] | None = None,
                       weights_file: Path | None = None) -> Model:
    """`build()` (a model described by `config_file`) with `weights` (read from
    `weights_file`) loaded. The model is first built on the meta device, which allocates
    nothing, to bound its size and to check the weights' names and shapes; only then is the
    real model allocated."""
    def damaged(problem: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{config_file}: model: {problem}; the file was edited or "
                                    "damaged.")

    try:
        with torch.device("meta"):
            expected = build().state_dict()
    except (TypeError, ValueError, KeyError) as error:
        raise damaged(f"cannot be built ({str(error).splitlines()[0]})") from error
    size = sum(tensor.numel() for tensor in expected.values())
    if size > MAX_PARAMETERS:
        raise damaged(f"{size:.3g} parameters, above the limit {MAX_PARAMETERS:.0e}")
    if weights is not None:
        checked_weights(weights, {k: v.shape for k, v in expected.items()}, str(weights_file))
    model = build()
    if weights:
        model.to(next(iter(weights.values())).dtype).load_state_dict(weights)
    return model


def kept_weights(run: RunDirectory, weights_name: str, message: str, resume: str,
                 unit: str = "epoch") -> tuple[dict[str, torch.Tensor], Path, str | None]:
    """The weights a run's model should use, their file, and a notice when training did not
    finish: `weights_name` (model.pt) unless the run is still "running" (killed, or live),
    then its last checkpoint's kept weights (`best_weights` when a validation loss chose
    them, else the current ones). `message` is the fit's own message, `resume` the command
    that continues the run, `unit` what the checkpoint counts ("epoch" or "step")."""
    path = run.path
    advice = f"continue it with `{resume}`"
    if run.state != "running":
        notices = {"finished": None,
                   "interrupted": f"{path}: training was interrupted ({message}); these are "
                                  f"the weights kept so far; {advice}.",
                   "diverged": f"{path}: training diverged ({message})."}
        return load_checkpoint(run.file(weights_name)), path / weights_name, notices[run.state]
    killed = run.was_killed()
    if not run.has(CHECKPOINT):
        if killed:
            raise InvalidArgumentError(
                f"{path}: training was stopped before its first checkpoint, so there are no "
                f"trained weights; {advice} (it starts over with the run's settings).")
        raise InvalidArgumentError(f"{path}: training is still running and has not written "
                                   "its first checkpoint yet; try again later.")
    snapshot = load_checkpoint(run.file(CHECKPOINT))
    epoch, best = snapshot.get("epoch"), snapshot.get("best_epoch")
    if not (isinstance(epoch, int) and isinstance(best, int)):
        raise InvalidArgumentError(f"{path / CHECKPOINT}: no epoch numbers; the file was "
                                   "edited or damaged.")
    weights = snapshot.get("best_weights" if best >= 0 else "model")
    if not isinstance(weights, dict):
        raise InvalidArgumentError(f"{path / CHECKPOINT}: no weights; the file was edited or "
                                   "damaged.")
    status = "was stopped (killed) before it finished" if killed else "is still running"
    kept = (f"best validation loss at {unit} {best}" if best >= 0
            else f"weights of {unit} {epoch}")
    return weights, path / CHECKPOINT, (
        f"{path}: training {status}; using its last checkpoint ({unit} {epoch}: {kept}); "
        f"{advice}.")
