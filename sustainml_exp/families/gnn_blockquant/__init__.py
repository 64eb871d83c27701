"""GNN activation compression (D3.2 Section 4): FP32 / EXACT INT2 / block-wise INT2 with G/R sweeps / VM."""

from sustainml_exp.families.gnn_blockquant.config import GNNRunConfig
from sustainml_exp.family import Family

FAMILY = Family(
    name="gnn_blockquant",
    schema=GNNRunConfig,
    run=f"{__name__}.train:run",
    tables=f"{__name__}.tables:write_tables",
)
