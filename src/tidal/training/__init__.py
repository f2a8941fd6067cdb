"""Training: fitting models to data, checkpoints and run directories."""

from tidal.training.config import TrainConfig
from tidal.training.fit import FitResult, fit
from tidal.training.pipeline import ModelOptions, resume_run, run_demo, train_run
from tidal.training.run import Run, load_run, save_run
from tidal.training.run_directory import RunDirectory

__all__ = ["FitResult", "ModelOptions", "Run", "RunDirectory", "TrainConfig", "fit", "load_run",
           "resume_run", "run_demo", "save_run", "train_run"]
