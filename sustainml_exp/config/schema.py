"""Top-level run schema shared by every experiment family.

Each family extends :class:`BaseRunConfig` with its own knobs; ``experiment=<family>`` selects that dataclass as
the typed schema of the whole config, so a typo or a wrong type fails during composition, before any work.
Value checks that a type cannot express live in ``validate()`` and raise :class:`ConfigError` with one line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

from sustainml_exp.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
# numpy's legacy global generator (np.random.seed, which every run seeds) takes seeds in [0, 2^32 - 1].
MAX_SEED = 2**32 - 1
PROGRESS_MODES = ("auto", "bar", "log", "off")
ENERGY_BACKENDS = ("carbontracker", "none")


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        shown = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: {shown}")


def check_range(key: str, value: float, *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise unless lo <(=) value <(=) hi; the message states the allowed interval."""
    bad = isinstance(value, float) and not math.isfinite(value)
    if lo is not None:
        bad |= value <= lo if lo_open else value < lo
    if hi is not None:
        bad |= value >= hi if hi_open else value > hi
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        interval = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {interval}")


@dataclass
class EnergySchema:
    backend: str = "carbontracker"
    # gCO2eq/kWh used to turn measured energy into co2_g; set it to your grid's figure. The default is the
    # EU-27 2023 average (EEA), a placeholder rather than a claim about where a run happens.
    carbon_intensity_g_per_kwh: float = 244.0
    # Used only when no power counter can be read and carbontracker falls back to its simulated-CPU mode.
    cpu_tdp_w: Optional[float] = None
    timeout_s: float = 10.0

    def validate(self) -> None:
        check_choice("energy.backend", self.backend, ENERGY_BACKENDS)
        check_range("energy.carbon_intensity_g_per_kwh", self.carbon_intensity_g_per_kwh, lo=0.0)
        if self.cpu_tdp_w is not None:
            check_range("energy.cpu_tdp_w", self.cpu_tdp_w, lo=0.0, lo_open=True)
        check_range("energy.timeout_s", self.timeout_s, lo=0.0, lo_open=True)


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
    energy: EnergySchema = field(default_factory=EnergySchema)

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
        if self.G_R is not None:
            check_range("G_R", self.G_R, lo=1)
        self.energy.validate()

    def record_fields(self) -> dict[str, Any]:
        """Family knobs recorded as columns of every row, failed runs included (``method`` among them)."""
        return {}


# Keys that name where things go, not what is computed: excluded from cfg_hash so moving results keeps run ids.
NON_SEMANTIC_KEYS = ("seed", "results_dir", "data_dir", "download", "progress", "rerun", "memory_check",
                     "memory_budget_mb")
