"""A tiny experiment family living outside the package: fit a line by gradient descent on noisy points.

The worked example of docs/adding_a_family.md; tests/test_adding_a_family.py registers it with SML_FAMILIES and runs
it through sml-run and sml-tables.
"""

from pathlib import Path

from sustainml_exp.family import Family
from toy_family.config import ToyRunConfig

FAMILY = Family(
    name="toy_family",
    schema=ToyRunConfig,
    run="toy_family.train:run",
    tables="toy_family.tables:write_tables",
    config_dir=Path(__file__).parent / "conf",
)
