"""A family from outside the package (tests/family_plugin/toy_family, the example of docs/adding_a_family.md) is
registered with SML_FAMILIES and runs end to end through sml-run and sml-tables, with the same checks and records
as the built-in families."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from cli_helpers import SML_RUN, SML_TABLES, run_cli
from sustainml_exp import registry

PLUGIN_DIR = Path(__file__).resolve().parent / "family_plugin"
PLUGIN_ENV = {"SML_FAMILIES": "toy_family", "PYTHONPATH": str(PLUGIN_DIR)}


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("toy")
    results = tmp / "results"
    proc = run_cli(SML_RUN, "-m", "experiment=toy_family", "energy=none", "seed=0,1", "lr=0.1,0.3",
                   f"results_dir={results}", cwd=tmp, env=PLUGIN_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results


def test_a_registered_family_runs_through_sml_run(toy_runs: Path) -> None:
    records = [json.loads(p.read_text()) for p in sorted((toy_runs / "runs" / "toy_family").glob("*.json"))]
    assert len(records) == 4 and len({r["run_id"] for r in records}) == 4
    for record in records:
        assert (record["family"], record["experiment"], record["status"]) == ("toy_family", "toy_family", "ok")
        assert record["method"] == "sgd" and record["lr"] in (0.1, 0.3) and record["n_params"] == 2
        assert 0.0 <= record["mse"] < 0.2 and record["train_s"] > 0  # the fit learned y = 2 x + 1
        assert record["config"]["family"] == "toy_family"


def test_a_registered_family_gets_its_tables_from_sml_tables(toy_runs: Path) -> None:
    proc = run_cli(SML_TABLES, "--results-dir", str(toy_runs), cwd=toy_runs.parent, env=PLUGIN_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_csv(toy_runs / "toy_family.csv")
    assert len(frame) == 4 and set(frame["family"]) == {"toy_family"}
    table = (toy_runs / "tables" / "toy_table.md").read_text()
    assert "| sgd         | 0.1  | 2   |" in table and "| sgd         | 0.3  | 2   |" in table


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["lr=0"], PLUGIN_ENV, "lr=0.0 is out of range; allowed: (0.0, inf]"),
        (["G_R=2"], PLUGIN_ENV, "unknown config key 'G_R'; allowed keys: seed, epochs"),
        ([], {**PLUGIN_ENV, "SML_FAMILIES": "no_such_family"},
         "SML_FAMILIES: cannot load the family 'no_such_family' (ModuleNotFoundError"),
        ([], {"SML_FAMILIES": ""}, "could not find config 'experiment/toy_family'; allowed: csl_segmentation"),
    ],
)
def test_bad_input_to_a_registered_family_is_one_line(args: list[str], env: dict[str, str], expected: str,
                                                      tmp_path: Path) -> None:
    proc = run_cli(SML_RUN, "experiment=toy_family", *args, f"results_dir={tmp_path / 'results'}", cwd=tmp_path,
                   env=env, timeout=300)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_an_installed_distribution_registers_a_family_by_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = metadata.EntryPoint(name="toy", value="toy_family", group=registry.ENTRY_POINT_GROUP)
    real = metadata.entry_points
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.delenv(registry.FAMILIES_ENV, raising=False)
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: [entry] if kw.get("group") == registry.ENTRY_POINT_GROUP else real(**kw))
    registry.families.cache_clear()
    try:
        family = registry.get_family("toy_family")
        assert family.run == "toy_family.train:run" and family.config_dir == PLUGIN_DIR / "toy_family" / "conf"
        assert registry.search_path() == [f"file://{family.config_dir}"]
    finally:
        registry.families.cache_clear()  # rebuilt without the entry point on next use
