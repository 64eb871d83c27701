"""Typed schema of ``experiment=gnn_blockquant`` (imports nothing heavy: it is read at CLI start-up)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from sustainml_exp.compress.spec import COMPRESS_BACKENDS, QUANT_BITS, QUANT_MODES
from sustainml_exp.config.checks import check_choice, check_range
from sustainml_exp.config.schema import NOT_HASHED, BaseRunConfig
from sustainml_exp.errors import ConfigError
from sustainml_exp.memory_budget import MEMORY_CHECKS

GRAPH_DATASETS = (
    "synthetic", "synthetic_arxiv", "synthetic_products", "ogbn-arxiv", "ogbn-products", "flickr")
LOSSES = ("ce", "exact_arxiv")


@dataclass
class SAGEConfig:
    num_layers: int = 3
    hidden: int = 128
    dropout: float = 0.5
    batch_norm: bool = True
    lr: float = 0.01
    weight_decay: float = 0.0
    # Max gradient norm; null disables clipping (the Flickr protocol does not clip).
    grad_clip: Optional[float] = 0.5
    # exact_arxiv: log(eps + CE) - log(eps) with eps = 1 - ln 2, the loss of EXACT's arxiv script.
    loss: str = "exact_arxiv"

    def validate(self) -> None:
        check_range("model.num_layers", self.num_layers, lo=1)
        check_range("model.hidden", self.hidden, lo=1)
        check_range("model.dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        check_range("model.lr", self.lr, lo=0.0, lo_open=True)
        check_range("model.weight_decay", self.weight_decay, lo=0.0)
        if self.grad_clip is not None:
            check_range("model.grad_clip", self.grad_clip, lo=0.0, lo_open=True)
        check_choice("model.loss", self.loss, LOSSES)


@dataclass
class CompressConfig:
    """What is saved for backward; the top-level knobs of the same names are interpolated in here."""

    quant: str = "${quant}"
    bits: int = "${bits}"  # type: ignore[assignment]
    kept_frac: float = "${kept_frac}"  # type: ignore[assignment]
    G_R: int = "${G_R}"  # type: ignore[assignment]
    vm: bool = "${vm}"  # type: ignore[assignment]
    backend: str = "${compress_backend}"
    lean: bool = "${lean}"  # type: ignore[assignment]
    # The public i-Exact code caps a block at 1024 values (its CUDA thread layout); null = no cap.
    group_cap: Optional[int] = None
    # Keep the ragged tail that does not fill a block in FP32 (public code) instead of as a short block.
    fp32_tail: bool = False
    # Save the D x R projection matrix (public code) instead of regenerating it from its seed in backward.
    store_rp_matrix: bool = False

    def validate(self) -> None:
        check_choice("quant", self.quant, QUANT_MODES)
        check_choice("bits", self.bits, QUANT_BITS)
        check_range("kept_frac", self.kept_frac, lo=0.0, hi=1.0, lo_open=True)
        check_range("G_R", self.G_R, lo=1)
        if self.vm and self.bits != 2:
            raise ConfigError(f"vm=true needs bits=2 (variance minimisation is defined for INT2), got bits={self.bits}")
        if self.vm and self.quant == "fp32":
            raise ConfigError("vm=true needs quant=exact or quant=block; quant=fp32 stores no quantized tensors")
        check_choice("compress_backend", self.backend, COMPRESS_BACKENDS)
        if self.lean and self.quant == "fp32":
            raise ConfigError("lean=true needs quant=exact or quant=block; quant=fp32 stores no compressed tensors")
        if self.group_cap is not None:
            check_range("compress.group_cap", self.group_cap, lo=1)


@dataclass
class GNNRunConfig(BaseRunConfig):
    dataset: str = "synthetic"
    epochs: int = 100
    G_R: int = 64  # rows per quantization block (block mode; EXACT has one per row)
    quant: str = "block"
    bits: int = 2
    kept_frac: float = 0.125
    vm: bool = False
    # Implementation of packing/unpacking: auto = triton on CUDA when usable, else torch (same bytes either way).
    compress_backend: str = "auto"
    # Regenerate dropout masks from their seed in backward instead of storing them (same gradients, less memory).
    lean: bool = False
    # Epochs whose training steps are excluded from epochs_per_s (allocator and kernel warm-up); a run shorter
    # than warmup_epochs + 1 excludes all but its last epoch rather than refusing to start.
    warmup_epochs: int = 3
    eval_every: int = 1
    # After training, histogram the normalized layer inputs for Table 5 / Figure 9.
    activation_stats: bool = True
    # Before loading the graph, estimate the run's peak memory and compare it with memory_budget_mb (null: what the
    # device offers): error refuses a run that will not fit (status oom), warn only logs it, off skips the check.
    memory_check: str = field(default="error", metadata=NOT_HASHED)
    memory_budget_mb: Optional[float] = field(default=None, metadata=NOT_HASHED)
    model: SAGEConfig = field(default_factory=SAGEConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)

    @property
    def untimed_epochs(self) -> int:
        return min(self.warmup_epochs, self.epochs - 1)

    def record_fields(self) -> dict[str, Any]:
        return {
            "method": self.quant,
            "quant": self.quant,
            "bits": 32 if self.quant == "fp32" else self.bits,
            "kept_frac": self.kept_frac,
            "G_R": self.G_R,
            "vm": self.vm,
            "lean": self.lean,
            # The requested backend; a run that starts overwrites it with the one actually used (never 'auto').
            "compress_backend": self.compress_backend,
            "group_cap": self.compress.group_cap,
            "fp32_tail": self.compress.fp32_tail,
            "store_rp_matrix": self.compress.store_rp_matrix,
            "num_layers": self.model.num_layers,
            "hidden": self.model.hidden,
        }

    def check_graph_size(self, num_nodes: int) -> None:
        """Run with the graph's node count (known from its shape before it is loaded), before training. Every
        compressed tensor has one row per node, so G_R = N already makes one block per tensor; a larger G_R names no
        other layout, and the Table 5 statistics would pad the activations to a whole block of G_R x R values
        (G_R=1e9 on a 128-feature graph: 64 GB)."""
        if self.quant == "block" and self.G_R is not None and self.G_R > num_nodes:
            raise ConfigError(f"G_R={self.G_R} is larger than the graph (dataset={self.dataset} has {num_nodes} "
                              f"nodes); allowed: 1 to {num_nodes} (G_R={num_nodes} is one block per tensor)")

    def validate(self) -> None:
        super().validate()
        check_choice("dataset", self.dataset, GRAPH_DATASETS)
        check_choice("compress_backend", self.compress_backend, COMPRESS_BACKENDS)
        check_range("warmup_epochs", self.warmup_epochs, lo=0)
        check_range("eval_every", self.eval_every, lo=1)
        check_choice("memory_check", self.memory_check, MEMORY_CHECKS)
        if self.memory_budget_mb is not None:
            check_range("memory_budget_mb", self.memory_budget_mb, lo=0.0, lo_open=True)
        self.model.validate()
        self.compress.validate()
