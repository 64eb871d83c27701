"""Entropy-sampled patch-contrastive self-supervised segmentation (D3.2 Section 3) and its two baselines."""

from sustainml_exp.families.csl_segmentation.config import CSLRunConfig, protocol_value
from sustainml_exp.family import Family

FAMILY = Family(
    name="csl_segmentation",
    schema=CSLRunConfig,
    run=f"{__name__}.train:run",
    tables=f"{__name__}.tables:write_tables",
    resolvers=(("csl_protocol", protocol_value),),
)
