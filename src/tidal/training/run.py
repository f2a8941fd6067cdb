"""A run directory: everything needed to use, check and continue a trained model.

    config.json      model config, scaling, training config, data description, version
    model.pt         the kept weights (a state_dict; loaded with weights_only=True)
    checkpoint.pt    the training state, for `fit(..., resume=True)`
    metrics.csv      the loss curve
    data/            the train, validation and test trajectories (CSV)
    report.html, *.png, metrics.json   written by `tidal.report`

Every file is written to a temporary name and renamed. Loading reads JSON, CSV and
`torch.load(weights_only=True)` only: nothing in a run directory can execute code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tidal._errors import InvalidArgumentError
from tidal._files import atomic_path
from tidal.data import SYSTEMS, Scaling, System, Trajectories, read_table, write_table
from tidal.models import NeuralODE
from tidal.models.registry import model_from_config
from tidal.training.checkpoint import load_checkpoint, save_checkpoint

CONFIG = "config.json"
WEIGHTS = "model.pt"
SPLITS = ("train", "val", "test")


@dataclass
class Run:
    """A trained model with its scaling and the description of its data.

    `predict` works in the user's units; `model` itself works in scaled units.
    """

    path: Path
    model: NeuralODE
    scaling: Scaling
    config: dict[str, Any]

    @property
    def state_names(self) -> list[str]:
        return list(self.config["data"]["state_names"])

    @property
    def system(self) -> System | None:
        """The built-in system the data was simulated from, when known."""
        name = self.config["data"].get("system")
        return SYSTEMS.get(name)

    def data(self, split: str) -> Trajectories | None:
        """The run's "train", "val" or "test" trajectories (None when that split is empty)."""
        path = self.path / "data" / f"{split}.csv"
        return read_table(path, time="t", id="id") if path.is_file() else None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model's weights (and so its states) are in."""
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def predict(self, y0: Any, ts: Any) -> np.ndarray:
        """States at times `ts` [T] from initial states `y0` [D] or [B, D], in the user's units.

        Returns [T, D] or [T, B, D].
        """
        y0 = torch.as_tensor(np.asarray(y0, dtype=float), dtype=self.dtype)
        if y0.shape[-1] != len(self.state_names) or y0.dim() > 2:
            raise InvalidArgumentError(
                f"`predict(y0=...)`: expected {len(self.state_names)} states "
                f"({', '.join(self.state_names)}) per initial state; got shape "
                f"{tuple(y0.shape)}.")
        ts = np.asarray(ts, dtype=float)
        scaled = self.model(self.scaling.scale_values(y0),
                            torch.as_tensor(self.scaling.scale_times(ts)))
        return self.scaling.unscale_values(scaled).numpy()


def save_run(path: str | Path, model: NeuralODE, scaling: Scaling, *, data: dict[str, Any],
             train_config: dict[str, Any],
             splits: dict[str, Trajectories | None] | None = None,
             outcome: dict[str, Any] | None = None) -> None:
    """Write config.json, model.pt and (when given) the data splits and the outcome of
    training into the run directory."""
    from tidal import __version__

    path = Path(path)
    config = {"tidal_version": __version__, "model": model.config(),
              "scaling": scaling.to_dict(), "train": train_config, "data": data,
              "fit": outcome or {}}
    (path / "data").mkdir(parents=True, exist_ok=True)
    for split, trajectories in (splits or {}).items():
        if trajectories is not None:
            write_table(trajectories, path / "data" / f"{split}.csv", time="t", id="id")
    save_checkpoint(path / WEIGHTS, model.state_dict())
    with atomic_path(path / CONFIG) as tmp:
        tmp.write_text(json.dumps(config, indent=2))


def load_run(path: str | Path) -> Run:
    """Rebuild a run's model from config.json and model.pt (no code from the files runs)."""
    path = Path(path)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise InvalidArgumentError(
            f"{path} is not a tidal run directory (no {CONFIG}); give the folder written by "
            "`tidal fit -o RUN`.")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise InvalidArgumentError(f"{config_path} is not valid JSON: {error}.") from error
    model = model_from_config(config["model"])
    weights = load_checkpoint(path / WEIGHTS)
    dtype = next(iter(weights.values())).dtype
    model.to(dtype).load_state_dict(weights)
    return Run(path, model.eval(), Scaling.from_dict(config["scaling"]), config)
