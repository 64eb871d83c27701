"""Typed schema of ``experiment=mfc_coreset`` (imports nothing heavy: it is read at CLI start-up)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from sustainml_exp.config.schema import BaseRunConfig, check_choice, check_range
from sustainml_exp.errors import ConfigError

IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "tinyimagenet")
# Coreset selectors return indices into the training set; condensation methods return synthetic images.
CORESET_METHODS = ("full", "rand", "mcs", "kcenter", "herding", "craig", "gradmatch", "submod")
CONDENSATION_METHODS = ("dm", "gm", "tm")
METHODS = CORESET_METHODS + CONDENSATION_METHODS
# Methods whose selection carries per-image weights: covering multiplicities (mcs), CRAIG and GradMatch weights.
WEIGHTED_METHODS = ("mcs", "craig", "gradmatch")
MODELS = ("mlp", "convnet", "resnet18")
TRAIN_MODES = ("standard", "pgd_linf", "pgd_l2")
NORMS = ("linf", "l2")
# pgd_linf / pgd_l2: PGD under that norm; aa: APGD-CE + APGD-DLR under `norm`, worst case per sample.
ATTACKS = ("pgd_linf", "pgd_l2", "aa")
MCS_SOLVERS = ("exact", "greedy")
# A covering's status, best to worst (a run reports its worst class). optimal: certified gap 0; feasible: a valid
# cover within the certified gap of the optimum; greedy: solver=greedy (greedy covers and packing bounds only).
MCS_STATUSES = ("optimal", "feasible", "greedy")
SUBMOD_FUNCTIONS = ("graph_cut", "facility_location")
CONDENSED_FORMATS = ("pixels", "meanstd")

# (channels, height, width) of each dataset's images.
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "svhn": (3, 32, 32),
    "tinyimagenet": (3, 64, 64),
}
N_CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100, "svhn": 10,
             "tinyimagenet": 200}
# Per-channel mean and std of the training images, used by the models' input normalisation and to turn
# mean/std-normalised condensed sets back into pixels. digits: its 1,438 training images (pixels / 16), population std.
MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.3058,), (0.3766,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "tinyimagenet": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
}
# Images in the smallest class of each training split: k above it is refused before any work (the selectors
# check the loaded data again). digits: the family's fixed 80 % split.
MIN_TRAIN_CLASS_SIZE = {"digits": 139, "mnist": 5421, "fashion_mnist": 6000, "cifar10": 5000, "cifar100": 500,
                        "svhn": 4659, "tinyimagenet": 500}
# The paper's linf budgets; the 8x8 digits take MNIST's (same kind of image, pixels in [0, 1]).
EPS_LINF = {"digits": 0.1, "mnist": 0.1, "fashion_mnist": 0.1, "cifar10": 8 / 255, "cifar100": 8 / 255,
            "svhn": 8 / 255, "tinyimagenet": 4 / 255}
# Model of each dataset when model= is not given: the figures' MLP on the grey-scale sets, their ConvNet on the
# 32 x 32 colour sets, ResNet18 on TinyImageNet (Table 1 uses ResNet18 everywhere: its script says so).
DEFAULT_MODELS = {"digits": "mlp", "mnist": "mlp", "fashion_mnist": "mlp", "cifar10": "convnet",
                  "cifar100": "convnet", "svhn": "convnet", "tinyimagenet": "resnet18"}
# Condensation iterations of DM and GM when condense.iterations is null: the methods' published values, and a short
# protocol on the embedded 8 x 8 digits (one GM iteration at k = 50 is 50 image updates and 500 network epochs:
# ~1.5 min on 2 CPU cores). TM's come with its protocol (TM_PROTOCOLS).
CONDENSE_ITERATIONS = {"dm": 20000, "gm": 1000}
CONDENSE_ITERATIONS_DIGITS = {"dm": 100, "gm": 1}


@dataclass(frozen=True)
class TMProtocol:
    """Trajectory matching (MTT, Cazenavette et al. 2022) settings; MTT's argument names in brackets."""

    source: str  # where the values come from, recorded with the run
    experts: int  # expert trajectories in the buffer [num_experts]
    expert_epochs: int  # epochs an expert trains [train_epochs of buffer.py]
    max_start_epoch: int  # start epochs are drawn from 0 .. max_start_epoch - 1 [max_start_epoch]
    expert_span: int  # expert epochs the student's steps are matched to [expert_epochs of distill.py, M]
    syn_steps: int  # student steps per iteration [syn_steps, N]
    batch_syn: Optional[int]  # synthetic images per student step, null: all of them [batch_syn]
    zca: bool  # ZCA-whiten the images the networks see [zca]
    lr_img: float  # synthetic images' SGD rate [lr_img]
    lr_lr: float  # the student step size's SGD rate [lr_lr]
    syn_lr: float  # the student step size's initial value [lr_teacher]
    iterations: int  # distillation iterations [Iteration]


# MTT's published hyper-parameters for 50 images per class (Table 1's budget): 100 experts x 50 epochs and 5,000
# iterations (buffer and distillation defaults), and per dataset MTT's published IPC-50 commands (CIFAR-10: lr_teacher
# 0.001, no ZCA; CIFAR-100: 80 steps, batch_syn 125, ZCA; Tiny ImageNet: 20 steps, lr_img 1e4, lr_lr 1e-4, batch_syn
# 300). MTT has no MNIST, Fashion-MNIST or SVHN row: those take CIFAR-10's (same number of classes, images no larger)
# and say so in their record.
_MTT_CIFAR10 = TMProtocol(source="MTT CIFAR-10 IPC 50", experts=100, expert_epochs=50, max_start_epoch=40,
                          expert_span=2, syn_steps=30, batch_syn=None, zca=False, lr_img=1000.0, lr_lr=1e-5,
                          syn_lr=0.001, iterations=5000)
TM_PROTOCOLS: dict[str, TMProtocol] = {
    "cifar10": _MTT_CIFAR10,
    "cifar100": dataclasses.replace(_MTT_CIFAR10, source="MTT CIFAR-100 IPC 50", syn_steps=80, batch_syn=125,
                                    zca=True, syn_lr=0.01),
    "tinyimagenet": dataclasses.replace(_MTT_CIFAR10, source="MTT Tiny ImageNet IPC 50", syn_steps=20,
                                        batch_syn=300, lr_img=10000.0, lr_lr=1e-4, syn_lr=0.01),
    **{name: dataclasses.replace(_MTT_CIFAR10, source=f"MTT CIFAR-10 IPC 50 (MTT has no {name} row)")
       for name in ("mnist", "fashion_mnist", "svhn")},
    # The embedded 8 x 8 digits: a short protocol that exercises the code in seconds (see tm.py).
    "digits": TMProtocol(source="short (embedded digits)", experts=2, expert_epochs=2, max_start_epoch=2,
                         expert_span=1, syn_steps=10, batch_syn=256, zca=False, lr_img=1000.0, lr_lr=1e-7,
                         syn_lr=0.01, iterations=20),
}


def input_dim(dataset: str) -> int:
    c, h, w = IMAGE_SHAPES[dataset]
    return c * h * w


def eps_l2_from_linf(eps_linf: float, dim: int) -> float:
    """The spec's l2 budget with the same expected reach: sqrt(2 n / (pi e)) * eps_inf for n input values."""
    return math.sqrt(2 * dim / (math.pi * math.e)) * eps_linf


def protocol_value(dataset: str, key: str) -> Any:
    """``${mfc_protocol:${dataset},<key>}`` in conf/experiment/mfc_coreset.yaml."""
    # An unknown dataset gets digits' values here; validate() then reports the name with the allowed ones.
    if key == "model":
        return DEFAULT_MODELS.get(dataset, "mlp")
    if key == "condense_batch_real":
        # Real images per class and condensation iteration: the methods' 256, 64 on the 8 x 8 digits.
        return 64 if dataset == "digits" else 256
    if key == "threads":
        # An MLP on 8 x 8 digits is too small to gain from threads (see BaseRunConfig.threads).
        return 1 if dataset == "digits" else None
    raise KeyError(f"mfc_protocol has no key {key!r}")


@dataclass
class MCSConfig:
    # exact: Lagrangian bounds, local search and (small classes) HiGHS; greedy: greedy covers and packing bounds only.
    solver: str = "exact"
    # Per class: the search for the smallest eta ends here (or earlier, once proven) and reports its certified gap.
    time_limit_s: float = 60.0
    target_gap: float = 0.0  # stop a class's search once its certified relative gap of eta is at most this
    distance_block: int = 4096  # rows per block of the pairwise distance computation
    max_bisection_steps: int = 100

    def validate(self) -> None:
        check_choice("mcs.solver", self.solver, MCS_SOLVERS)
        check_range("mcs.time_limit_s", self.time_limit_s, lo=0.0, lo_open=True)
        check_range("mcs.target_gap", self.target_gap, lo=0.0, hi=1.0, hi_open=True)
        check_range("mcs.distance_block", self.distance_block, lo=1)
        check_range("mcs.max_bisection_steps", self.max_bisection_steps, lo=1)


@dataclass
class ProxyConfig:
    """The briefly trained model whose last-layer gradients craig and gradmatch select on."""

    # 10 epochs: on digits 3 epochs leave the proxy at 65 % training accuracy, whose gradients say little.
    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 128

    def validate(self) -> None:
        check_range("proxy.epochs", self.epochs, lo=1)
        check_range("proxy.lr", self.lr, lo=0.0, lo_open=True)
        check_range("proxy.batch_size", self.batch_size, lo=1)


@dataclass
class TMConfig:
    """Overrides of the dataset's TM protocol (TM_PROTOCOLS); null keeps the protocol's value."""

    experts: Optional[int] = None
    expert_epochs: Optional[int] = None
    max_start_epoch: Optional[int] = None
    expert_span: Optional[int] = None
    syn_steps: Optional[int] = None
    batch_syn: Optional[int] = None
    zca: Optional[bool] = None
    lr_img: Optional[float] = None
    lr_lr: Optional[float] = None
    syn_lr: Optional[float] = None
    # Where expert trajectories are kept between runs (MTT's buffer): null keeps them in memory for one run only.
    # 100 experts of the CIFAR ConvNet take GBs: set it at the published scale.
    buffer_dir: Optional[str] = None

    def overrides(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(TMProtocol) if getattr(self, f.name, None) is not None}

    def validate(self) -> None:
        for key in ("experts", "expert_epochs", "max_start_epoch", "expert_span", "syn_steps", "batch_syn"):
            if getattr(self, key) is not None:
                check_range(f"condense.tm.{key}", getattr(self, key), lo=1)
        for key in ("lr_img", "lr_lr", "syn_lr"):
            if getattr(self, key) is not None:
                check_range(f"condense.tm.{key}", getattr(self, key), lo=0.0, lo_open=True)


def resolve_tm_protocol(dataset: str, overrides: TMConfig) -> TMProtocol:
    """The dataset's TM protocol with the non-null overrides applied; one line naming the conflict when the
    trajectories are too short for the start epochs and span asked for."""
    protocol = dataclasses.replace(TM_PROTOCOLS.get(dataset, TM_PROTOCOLS["digits"]), **overrides.overrides())
    last = protocol.max_start_epoch - 1 + protocol.expert_span
    if last > protocol.expert_epochs:
        raise ConfigError(f"condense.tm: max_start_epoch={protocol.max_start_epoch} and expert_span="
                          f"{protocol.expert_span} need experts of {last} epochs, but expert_epochs="
                          f"{protocol.expert_epochs}; allowed: max_start_epoch - 1 + expert_span <= expert_epochs")
    return protocol


@dataclass
class CondenseConfig:
    iterations: Optional[int] = None  # null: CONDENSE_ITERATIONS (CONDENSE_ITERATIONS_DIGITS on digits)
    lr_img: float = 1.0  # DM's image learning rate
    batch_real: int = 256  # real images per class and iteration
    init: str = "real"  # real: start from random real images of the class; noise: uniform noise
    # A precomputed condensed set (.pt or .npz with images (N,C,H,W) and labels (N,)) used instead of condensing.
    file: Optional[str] = None
    file_format: str = "pixels"  # pixels: already in [0,1]; meanstd: normalised with the dataset's mean/std
    tm: TMConfig = field(default_factory=TMConfig)
    # GM (gradient matching): image updates and network epochs per iteration; null: DC's table by images per class
    # (k=10: 10 and 50, k=50: 50 and 10).
    gm_outer: Optional[int] = None
    gm_inner: Optional[int] = None

    def validate(self) -> None:
        if self.iterations is not None:
            check_range("condense.iterations", self.iterations, lo=1)
        check_range("condense.lr_img", self.lr_img, lo=0.0, lo_open=True)
        check_range("condense.batch_real", self.batch_real, lo=1)
        check_choice("condense.init", self.init, ("real", "noise"))
        check_choice("condense.file_format", self.file_format, CONDENSED_FORMATS)
        self.tm.validate()
        for key in ("gm_outer", "gm_inner"):
            if getattr(self, key) is not None:
                check_range(f"condense.{key}", getattr(self, key), lo=1)


@dataclass
class AttackConfig:
    """Evaluation attacks; training PGD has its own steps (train_pgd_steps)."""

    names: list[str] = field(default_factory=lambda: list(ATTACKS))
    pgd_steps: int = 20
    # AutoAttack's APGD-CE + APGD-DLR: the paper's custom version runs 5 restarts x 100 iterations.
    aa_restarts: int = 5
    aa_steps: int = 100
    max_examples: Optional[int] = None  # robust accuracy on the first n test images (null: all); clean on all
    batch_size: int = 500

    def validate(self) -> None:
        if not self.names:
            raise ConfigError(f"attack.names=[] is not allowed; allowed: a non-empty list of {', '.join(ATTACKS)}")
        for name in self.names:
            check_choice("attack.names", name, ATTACKS)
        check_range("attack.pgd_steps", self.pgd_steps, lo=1)
        check_range("attack.aa_restarts", self.aa_restarts, lo=1)
        check_range("attack.aa_steps", self.aa_steps, lo=1)
        if self.max_examples is not None:
            check_range("attack.max_examples", self.max_examples, lo=1)
        check_range("attack.batch_size", self.batch_size, lo=1)


@dataclass
class MFCRunConfig(BaseRunConfig):
    experiment: str = "mfc_coreset"
    dataset: str = "digits"
    epochs: int = 20
    method: str = "mcs"
    k: int = 50  # images per class (the paper's budget: Table 1's k = 50 is per class)
    model: str = "mlp"
    train: str = "pgd_linf"
    # Threat model of the recorded eps and of the aa attack; PGD evaluation runs under both norms.
    norm: str = "linf"
    eps_linf: Optional[float] = None  # null: the paper's budget for the dataset (EPS_LINF)
    eps_l2: Optional[float] = None  # null: sqrt(2n / (pi e)) * eps_linf
    train_pgd_steps: int = 10
    # Covering multiplicities (mcs) or selection weights (craig, gradmatch) as per-sample loss weights.
    weighted: bool = False
    # Generalized adversarial loss over the covering (mcs): each centre is attacked over B_2(eta of its class) +
    # the eps-ball of the training norm instead of the eps-ball alone (generalized.py).
    generalized: bool = False
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    submod_function: str = "graph_cut"
    graph_cut_lambda: float = 0.5
    mcs: MCSConfig = field(default_factory=MCSConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    condense: CondenseConfig = field(default_factory=CondenseConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)

    @property
    def resolved_eps_linf(self) -> float:
        return EPS_LINF[self.dataset] if self.eps_linf is None else self.eps_linf

    @property
    def resolved_eps_l2(self) -> float:
        if self.eps_l2 is not None:
            return self.eps_l2
        return eps_l2_from_linf(self.resolved_eps_linf, input_dim(self.dataset))

    def eps_for(self, norm: str) -> float:
        return self.resolved_eps_linf if norm == "linf" else self.resolved_eps_l2

    @property
    def tm_protocol(self) -> TMProtocol:
        return resolve_tm_protocol(self.dataset, self.condense.tm)

    @property
    def condense_iterations(self) -> int:
        if self.condense.iterations is not None:
            return self.condense.iterations
        if self.method == "tm":
            return self.tm_protocol.iterations
        table = CONDENSE_ITERATIONS_DIGITS if self.dataset == "digits" else CONDENSE_ITERATIONS
        return table.get(self.method, 0)

    @property
    def condense_protocol(self) -> str:
        """published | short (the embedded digits' protocol) | custom (a condense knob set on the command line)."""
        condense = self.condense
        defaults = CondenseConfig()
        custom = (condense.iterations is not None or condense.tm.overrides()
                  or condense.batch_real != protocol_value(self.dataset, "condense_batch_real")
                  or any(getattr(condense, key) != getattr(defaults, key)
                         for key in ("lr_img", "init", "gm_outer", "gm_inner")))
        if custom:
            return "custom"
        return "short" if self.dataset == "digits" else "published"

    def record_fields(self) -> dict[str, Any]:
        known = self.dataset in EPS_LINF
        return {
            "method": self.method,
            "k": self.k,
            "model": self.model,
            "train": self.train,
            "norm": self.norm,
            "eps": self.eps_for(self.norm) if known else float("nan"),
            "eps_linf": self.resolved_eps_linf if known else float("nan"),
            "eps_l2": self.resolved_eps_l2 if known else float("nan"),
            "weighted": self.weighted,
            "generalized": self.generalized,
            "train_pgd_steps": self.train_pgd_steps,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "max_examples": self.attack.max_examples,
            "eta": float("nan"),
            "select_s": float("nan"),
            # The condensation protocol the tables label rows with (empty for coreset methods).
            "condense_protocol": ("file" if self.condense.file is not None else self.condense_protocol)
            if self.method in CONDENSATION_METHODS else "",
        }

    def validate(self) -> None:
        super().validate()
        check_choice("dataset", self.dataset, IMAGE_DATASETS)
        check_choice("method", self.method, METHODS)
        check_choice("model", self.model, MODELS)
        check_choice("train", self.train, TRAIN_MODES)
        check_choice("norm", self.norm, NORMS)
        check_range("k", self.k, lo=1)
        if self.method != "full" and self.k > MIN_TRAIN_CLASS_SIZE[self.dataset]:
            smallest = MIN_TRAIN_CLASS_SIZE[self.dataset]
            raise ConfigError(f"k={self.k} is larger than the smallest class of {self.dataset} ({smallest} training "
                              f"images); allowed: 1 <= k <= {smallest}")
        for key in ("eps_linf", "eps_l2"):
            value = getattr(self, key)
            if value is not None:
                check_range(key, value, lo=0.0)
        check_range("train_pgd_steps", self.train_pgd_steps, lo=1)
        check_range("lr", self.lr, lo=0.0, lo_open=True)
        check_range("momentum", self.momentum, lo=0.0, hi=1.0, hi_open=True)
        check_range("weight_decay", self.weight_decay, lo=0.0)
        check_range("batch_size", self.batch_size, lo=1)
        check_choice("submod_function", self.submod_function, SUBMOD_FUNCTIONS)
        check_range("graph_cut_lambda", self.graph_cut_lambda, lo=0.0)
        if self.generalized and self.method != "mcs":
            raise ConfigError(f"generalized=true needs method=mcs (the covering radius eta), got method={self.method}")
        if self.generalized and self.train == "standard":
            raise ConfigError("generalized=true needs adversarial training; allowed: train=pgd_linf or train=pgd_l2")
        if self.weighted and self.method not in WEIGHTED_METHODS:
            raise ConfigError(f"weighted=true needs a method with selection weights, got method={self.method}; "
                              f"allowed: {', '.join(WEIGHTED_METHODS)}")
        if self.condense.file is not None and self.method not in CONDENSATION_METHODS:
            raise ConfigError(f"condense.file is set but method={self.method}; allowed: method in "
                              f"{', '.join(CONDENSATION_METHODS)}")
        self.mcs.validate()
        self.proxy.validate()
        self.condense.validate()
        if self.method == "tm":
            self.tm_protocol  # noqa: B018 - resolving it checks the overrides against the protocol
        self.attack.validate()
