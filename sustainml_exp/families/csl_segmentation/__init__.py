"""Entropy-sampled patch-contrastive self-supervised segmentation (D3.2 Section 3) and its two baselines."""
