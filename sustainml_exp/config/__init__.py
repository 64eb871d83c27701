"""Typed config schemas (schema.py) and the value checks they use (checks.py); no heavy imports.

Nothing is re-exported here, so that a service's own settings (energy/config.py) can use the checks without
importing the run schema that embeds those settings."""
