"""GNN activation compression (D3.2 Section 4): FP32 / EXACT INT2 / block-wise INT2 with G/R sweeps / VM."""
