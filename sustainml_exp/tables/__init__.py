"""``sml-tables``: merge run records into per-experiment CSVs and regenerate each family's tables and figures."""
