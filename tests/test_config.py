"""Bad input fails in the preflight with one line naming the key and what is allowed; --help/--cfg stay light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sustainml_exp.cli import preflight


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["G_R=0"], "G_R=0 is out of range; allowed: [1, inf]"),
        (["bits=3"], "bits=3 is not allowed; allowed: 2, 4, 8"),
        (["kept_frac=2"], "kept_frac=2.0 is out of range; allowed: (0.0, 1.0]"),
        (["vm=true", "bits=4"], "vm=true needs bits=2"),
        (["quant=fp32", "vm=true"], "vm=true needs quant=exact or quant=block"),
        (["quant=int3"], "quant='int3' is not allowed; allowed: fp32, exact, block"),
        (["G_RR=3"], "unknown config key 'G_RR'; allowed keys: experiment, seed"),
        (["model.hiden=3"], "unknown config key 'model.hiden'; allowed keys under model: num_layers, hidden"),
        (["bits=abc"], "bits: Value 'abc' of type 'str' could not be converted to Integer"),
        (["experiment=nope"],
         "could not find config 'experiment/nope'; allowed: csl_segmentation, gnn_blockquant, gnn_flickr"),
        (["energy=rapl"], "could not find config 'energy/rapl'; allowed: carbontracker, none"),
        (["device=tpu"], "device='tpu' is not allowed; allowed: auto, cpu, cuda"),
        (["dataset=cora"], "dataset='cora' is not allowed; allowed: synthetic, synthetic_arxiv, synthetic_products, "
                           "ogbn-arxiv, ogbn-products, flickr"),
        (["warmup_epochs=-1"], "warmup_epochs=-1 is out of range"),
        (["-m", "G_R=2,0"], "G_R=0 is out of range"),
        (["seed=-1"], "seed=-1 is out of range"),
        (["energy.carbon_intensity_g_per_kwh=-3"], "energy.carbon_intensity_g_per_kwh=-3.0 is out of range"),
        (["compress_backend=cuda"],
         "compress_backend='cuda' is not allowed; allowed: auto, torch, torch-compiled, triton"),
        (["quant=fp32", "lean=true"], "lean=true needs quant=exact or quant=block"),
        (["lean=sometimes"], "lean: Value 'sometimes' is not a valid bool"),
    ],
)
def test_bad_input_is_one_line(argv: list[str], expected: str) -> None:
    error = preflight(argv)
    assert error is not None and expected in error
    assert "\n" not in error


@pytest.mark.parametrize(
    "argv",
    [[], ["G_R=64"], ["experiment=gnn_flickr"], ["experiment=csl_segmentation", "dataset=monuseg"],
     ["quant=exact", "vm=true"], ["-m", "G_R=2,4,8", "seed=0,1"],
     ["--help"], ["energy=none", "compress.group_cap=1024"], ["lean=true", "compress_backend=torch"],
     ["compress_backend=triton"]],
)
def test_good_input_passes(argv: list[str]) -> None:
    assert preflight(argv) is None


def test_cfg_job_does_not_import_torch() -> None:
    code = (
        "import sys; from sustainml_exp.cli import preflight, _compose_typed;"
        "assert preflight(['G_R=8']) is None; typed, _ = _compose_typed(['G_R=8']);"
        "assert typed.compress.G_R == 8, typed.compress;"
        "heavy = [m for m in ('torch', 'triton', 'torch_geometric', 'carbontracker') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_top_level_knobs_are_interpolated_into_nested_config() -> None:
    from sustainml_exp.cli import _compose_typed

    typed, _ = _compose_typed(["G_R=16", "quant=exact", "bits=4", "kept_frac=0.25"])
    assert (typed.compress.G_R, typed.compress.quant, typed.compress.bits, typed.compress.kept_frac) == (
        16, "exact", 4, 0.25)
    assert (typed.compress.backend, typed.compress.lean) == ("auto", False)
    typed, _ = _compose_typed(["lean=true", "compress_backend=torch"])
    assert (typed.compress.backend, typed.compress.lean) == ("torch", True)
    assert {"lean": True, "compress_backend": "torch"}.items() <= typed.record_fields().items()


def test_flickr_experiment_sets_paper_protocol() -> None:
    from sustainml_exp.cli import _compose_typed

    typed, _ = _compose_typed(["experiment=gnn_flickr"])
    assert typed.dataset == "flickr" and typed.epochs == 400
    assert (typed.model.num_layers, typed.model.hidden, typed.model.dropout, typed.model.loss) == (2, 256, 0.3, "ce")
