"""A progress bar with the stage, the loss and the ETA (tqdm), quiet when disabled.

The stage is on the bar because the loss jumps when the curriculum lengthens the horizon: a
longer window is harder to fit, so a jump at a stage change is expected, not divergence.
"""

from __future__ import annotations

import math

from tqdm.auto import tqdm


def stage_label(stage: int, stages: int, horizon: float, segments: int = 1) -> str:
    """"stage 2/3 horizon 0.6" (or "... 4 segments" in a multiple-shooting stage)."""
    label = f"stage {stage + 1}/{stages} horizon {horizon:g}"
    return f"{label} {segments} segments" if segments > 1 else label


class Progress:
    def __init__(self, total: int, *, initial: int = 0, enabled: bool = True,
                 unit: str = "epoch") -> None:
        self.bar = tqdm(total=total, initial=initial, disable=not enabled, unit=unit,
                        dynamic_ncols=True, leave=True)
        self.position = initial
        self.stage = ""

    def update(self, position: int, train_loss: float, val_loss: float, stage: str) -> None:
        """Advance to `position` (epochs or steps); `stage` (e.g. from `stage_label`) is shown
        before the bar, at once when it changes (tqdm otherwise redraws at most every 0.1 s)."""
        if stage != self.stage:
            self.stage = stage
            self.bar.set_description_str(stage, refresh=True)
        postfix = {"loss": f"{train_loss:.4g}"}
        if not math.isnan(val_loss):
            postfix["val"] = f"{val_loss:.4g}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(position - self.position)
        self.position = position

    def close(self) -> None:
        self.bar.close()
