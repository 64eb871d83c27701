"""Experiment families: one package per family (config schema, data, model, training, tables)."""
