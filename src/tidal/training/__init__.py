"""Training: fitting models to data, checkpoints and run directories."""

from tidal.training.config import TrainConfig
from tidal.training.fit import FitResult, fit
from tidal.training.pipeline import ModelOptions, run_demo, train_run
from tidal.training.run import Run, load_run, save_run

__all__ = ["FitResult", "ModelOptions", "Run", "TrainConfig", "fit", "load_run", "run_demo",
           "save_run", "train_run"]
