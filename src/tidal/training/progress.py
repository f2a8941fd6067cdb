"""A progress bar with the loss and the ETA (tqdm), quiet when disabled."""

from __future__ import annotations

import math

from tqdm.auto import tqdm


class Progress:
    def __init__(self, total: int, *, initial: int = 0, enabled: bool = True) -> None:
        self.bar = tqdm(total=total, initial=initial, disable=not enabled, unit="epoch",
                        dynamic_ncols=True, leave=True)
        self.position = initial

    def update(self, epoch: int, train_loss: float, val_loss: float) -> None:
        postfix = {"loss": f"{train_loss:.4g}"}
        if not math.isnan(val_loss):
            postfix["val"] = f"{val_loss:.4g}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(epoch - self.position)
        self.position = epoch

    def close(self) -> None:
        self.bar.close()
