"""Minimal finite covering coresets with adversarial training vs coreset and condensation baselines (D3.2 §2)."""
