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
        (["G_RR=3"], "unknown config key 'G_RR'; allowed keys: seed, epochs"),
        # The allowed keys are the preset's family's, presets included.
        (["experiment=gnn_flickr", "G_RR=3"], "unknown config key 'G_RR'; allowed keys: seed, epochs"),
        (["experiment=gnn_flickr", "G_RR=3"], "warmup_epochs"),
        # G_R is a gnn_blockquant knob: refused elsewhere rather than silently changing the run id.
        (["experiment=mfc_coreset", "G_R=2"], "unknown config key 'G_R'; allowed keys: seed, epochs"),
        (["experiment=csl_segmentation", "G_R=2"], "similarity"),
        (["experiment=mfc_coreset", "+G_R=2"], "unknown config key 'G_R'; allowed keys: seed, epochs"),
        (["+model.foo=1"], "unknown config key 'model.foo'; allowed keys under model: num_layers"),
        (["family=mfc_coreset"], "family='mfc_coreset' does not match the experiment's schema"),
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


# One changed value for every key that must not change the run id (seed changes the run id's suffix only).
NON_SEMANTIC_CHANGES = {
    "seed": ["seed=7"],
    "results_dir": ["results_dir=/elsewhere/results"],
    "data_dir": ["data_dir=/elsewhere/data"],
    "download": ["download=true"],
    "progress": ["progress=off"],
    "threads": ["threads=3"],
    "rerun": ["rerun=true"],
    "energy": ["energy=none", "energy.carbon_intensity_g_per_kwh=12.5", "energy.timeout_s=3"],
}
# The same for the keys a family marks itself, by preset.
FAMILY_NON_SEMANTIC_CHANGES = {
    "mfc_coreset": {"condense.tm.buffer_dir": ["condense.tm.buffer_dir=/elsewhere/experts"]},
    "gnn_blockquant": {"memory_check": ["memory_check=off"], "memory_budget_mb": ["memory_budget_mb=1e6"]},
}


def _identity(overrides: list[str]) -> tuple[str, str]:
    from omegaconf import OmegaConf

    from sustainml_exp.cli import _compose_typed
    from sustainml_exp.runner import run_identity

    typed, cfg = _compose_typed(overrides)
    return run_identity(typed, OmegaConf.to_container(cfg, resolve=True))


def test_every_non_semantic_key_of_every_family_has_a_change_below() -> None:
    # A key a family marks NOT_HASHED itself needs a change here too, so the test below covers it.
    from sustainml_exp.config.schema import NON_SEMANTIC_KEYS, non_semantic_keys
    from sustainml_exp.registry import families

    assert set(NON_SEMANTIC_CHANGES) == set(NON_SEMANTIC_KEYS)
    for family in families().values():
        expected = {*NON_SEMANTIC_CHANGES, *FAMILY_NON_SEMANTIC_CHANGES.get(family.name, {})}
        assert set(non_semantic_keys(family.schema)) == expected, family.name


@pytest.mark.parametrize("preset", ["gnn_blockquant", "mfc_coreset", "csl_segmentation"])
def test_non_semantic_keys_keep_the_run_id(preset: str) -> None:
    base_hash, base_id = _identity([f"experiment={preset}"])
    for key, changes in {**NON_SEMANTIC_CHANGES, **FAMILY_NON_SEMANTIC_CHANGES.get(preset, {})}.items():
        for change in changes:
            cfg_hash, run_id = _identity([f"experiment={preset}", change])
            assert cfg_hash == base_hash, change
            assert (run_id == base_id) == (key != "seed"), change
    # A knob that changes what is computed does change it.
    assert _identity([f"experiment={preset}", "epochs=2"])[0] != base_hash


def test_a_nested_non_semantic_key_leaves_its_siblings_in_the_hash() -> None:
    from sustainml_exp.provenance import config_hash

    exclude = ("condense.tm.buffer_dir",)
    config = {"epochs": 1, "condense": {"tm": {"buffer_dir": "/a", "experts": 2}, "iterations": 5}}
    moved = {**config, "condense": {**config["condense"], "tm": {"buffer_dir": "/b", "experts": 2}}}
    more = {**config, "condense": {**config["condense"], "tm": {"buffer_dir": "/a", "experts": 3}}}
    assert config_hash(config, exclude) == config_hash(moved, exclude) != config_hash(more, exclude)


def test_a_preset_and_the_same_config_typed_out_share_a_run_id() -> None:
    flickr = ["dataset=flickr", "epochs=400", "model.num_layers=2", "model.hidden=256", "model.dropout=0.3",
              "model.grad_clip=null", "model.loss=ce"]
    assert _identity(["experiment=gnn_flickr"]) == _identity(["experiment=gnn_blockquant", *flickr])
