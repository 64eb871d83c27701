"""Per-run progress: a tqdm bar on a terminal, plain log lines otherwise (Slurm logs, CI, pipes)."""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("sustainml_exp")


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


class Progress:
    """``update(epoch, **metrics)`` once per epoch; mode is auto | bar | log | off."""

    def __init__(self, total: int, desc: str, mode: str = "auto") -> None:
        self.total = total
        self.desc = desc
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        # About ten log lines per run, plus the last epoch.
        self.log_every = max(1, total // 10)
        self._bar = None
        if mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="epoch", dynamic_ncols=True, leave=True)

    def update(self, epoch: int, **metrics: Any) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in metrics.items()})
            self._bar.update(1)
        elif self.mode == "log" and (epoch % self.log_every == 0 or epoch == self.total):
            log.info("%s epoch %d/%d %s", self.desc, epoch, self.total, _fmt(metrics))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
