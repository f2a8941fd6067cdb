"""Checkpoints: training state saved atomically and loaded without executing code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (model, optimizer and
scheduler state_dicts, the RNG state, the loss history), written with `torch.save` to a
temporary file and renamed, and read with `torch.load(weights_only=True)`, which refuses
anything but those plain types: a checkpoint file cannot run code when loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tidal._errors import InvalidArgumentError
from tidal._files import atomic_path

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(
            f"No checkpoint at {path}; train without `resume` first, or give the run "
            "directory that holds checkpoint.pt.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise InvalidArgumentError(
            f"Cannot load {path}: {str(error).splitlines()[0]}. It is not a tidal checkpoint "
            "(or it holds objects other than tensors and plain values, which are refused).")\
            from error
