"""Minimal finite covering coresets with adversarial training vs coreset and condensation baselines (D3.2 §2)."""

from sustainml_exp.families.mfc_coreset.config import MFCRunConfig, protocol_value
from sustainml_exp.family import Family

FAMILY = Family(
    name="mfc_coreset",
    schema=MFCRunConfig,
    run=f"{__name__}.train:run",
    tables=f"{__name__}.tables:write_tables",
    resolvers=(("mfc_protocol", protocol_value),),
)
