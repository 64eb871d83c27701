"""Top-level run schema shared by every experiment family.

Each family extends :class:`BaseRunConfig` with its own knobs; ``experiment=<preset>`` selects the preset's family
dataclass as the typed schema of the whole config, so a typo or a wrong type fails during composition, before any work.
Value checks that a type cannot express live in ``validate()`` and raise :class:`ConfigError` with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from omegaconf import MISSING

from sustainml_exp.config.checks import check_choice, check_range
from sustainml_exp.energy.config import EnergyConfig
from sustainml_exp.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
# numpy's legacy global generator (np.random.seed, which every run seeds) takes seeds in [0, 2^32 - 1].
MAX_SEED = 2**32 - 1
PROGRESS_MODES = ("auto", "bar", "log", "off")


# Metadata of a key that says where things go or how a run is watched, not what it computes: such keys are left
# out of cfg_hash, so changing one keeps the run id (a finished run is still skipped).
NOT_HASHED = {"semantic": False}


@dataclass
class BaseRunConfig:
    # Set by the experiment preset's schema (registry.register_schemas), never typed: sml-run experiment=<preset>.
    family: str = MISSING
    seed: int = field(default=0, metadata=NOT_HASHED)  # in the run id after the hash: <cfg_hash>-s<seed>
    epochs: int = 1
    dataset: str = ""
    device: str = "auto"
    results_dir: str = field(default="./results", metadata=NOT_HASHED)
    data_dir: str = field(default="./data", metadata=NOT_HASHED)
    download: bool = field(default=False, metadata=NOT_HASHED)
    progress: str = field(default="auto", metadata=NOT_HASHED)
    # CPU threads of torch (null: torch's default). Tiny models run fastest on one: with more, OpenMP's waiting
    # threads cost more than the work, many-fold on a busy machine.
    threads: Optional[int] = field(default=None, metadata=NOT_HASHED)
    # A run whose run_id already has an ok record is skipped, so a resubmitted sweep only runs what is missing.
    rerun: bool = field(default=False, metadata=NOT_HASHED)
    energy: EnergyConfig = field(default_factory=EnergyConfig, metadata=NOT_HASHED)

    def validate(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed={self.seed} is out of range; allowed: [0, {MAX_SEED}] (every run seeds numpy, "
                              "whose seed is a 32-bit unsigned integer)")
        if not self.results_dir.strip():
            raise ConfigError("results_dir='' is not allowed; allowed: a folder path (default: ./results)")
        check_range("epochs", self.epochs, lo=1)
        check_choice("device", self.device, DEVICES)
        check_choice("progress", self.progress, PROGRESS_MODES)
        if self.threads is not None:
            check_range("threads", self.threads, lo=1)
        self.energy.validate()

    def record_fields(self) -> dict[str, Any]:
        """Family knobs recorded as columns of every row, failed runs included (``method`` among them)."""
        return {}


def non_semantic_keys(schema: type) -> tuple[str, ...]:
    """The keys of ``schema`` marked NOT_HASHED, dotted below the top level (a family schema may mark its own, at
    any depth: condense.tm.buffer_dir)."""
    keys: list[str] = []
    for f in fields(schema):
        if f.metadata.get("semantic") is False:
            keys.append(f.name)
        elif callable(f.default_factory) and is_dataclass(f.default_factory):
            keys += [f"{f.name}.{key}" for key in non_semantic_keys(f.default_factory)]
    return tuple(keys)


NON_SEMANTIC_KEYS = non_semantic_keys(BaseRunConfig)
