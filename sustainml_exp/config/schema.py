"""Top-level run schema shared by every experiment family.

Each family extends :class:`BaseRunConfig` with its own knobs; ``experiment=<family>`` selects that dataclass as
the typed schema of the whole config, so a typo or a wrong type fails during composition, before any work.
Value checks that a type cannot express live in ``validate()`` and raise :class:`ConfigError` with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from sustainml_exp.config.checks import check_choice, check_range
from sustainml_exp.energy.config import EnergyConfig

DEVICES = ("auto", "cpu", "cuda")
PROGRESS_MODES = ("auto", "bar", "log", "off")


@dataclass
class BaseRunConfig:
    experiment: str = "gnn_blockquant"
    seed: int = 0
    epochs: int = 1
    dataset: str = ""
    device: str = "auto"
    # Group-size knob of the block-wise quantizer (rows per block); families without blocks ignore it.
    G_R: Optional[int] = None
    results_dir: str = "./results"
    data_dir: str = "./data"
    download: bool = False
    progress: str = "auto"
    # CPU threads of torch (null: torch's default). Tiny models run fastest on one: with more, OpenMP's waiting
    # threads cost more than the work, many-fold on a busy machine.
    threads: Optional[int] = None
    # A run whose run_id already has an ok record is skipped, so a resubmitted sweep only runs what is missing.
    rerun: bool = False
    energy: EnergyConfig = field(default_factory=EnergyConfig)

    def validate(self) -> None:
        check_range("seed", self.seed, lo=0)
        check_range("epochs", self.epochs, lo=1)
        check_choice("device", self.device, DEVICES)
        check_choice("progress", self.progress, PROGRESS_MODES)
        if self.threads is not None:
            check_range("threads", self.threads, lo=1)
        if self.G_R is not None:
            check_range("G_R", self.G_R, lo=1)
        self.energy.validate()

    def record_fields(self) -> dict[str, Any]:
        """Family knobs recorded as columns of every row, failed runs included (``method`` among them)."""
        return {}


# Keys that name where things go, not what is computed: excluded from cfg_hash so moving results keeps run ids.
NON_SEMANTIC_KEYS = ("seed", "results_dir", "data_dir", "download", "progress", "rerun")
