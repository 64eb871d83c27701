"""Packed activation layouts for compressed training (installs as ``sustainml_kernels``).

``quant_ref`` is the pure-torch reference: it defines the bit layout, the counter-based random stream and the
integer/fp32 arithmetic of stochastic block quantization. Accelerated kernels placed next to it must produce
byte-identical payloads and metadata for the same inputs and seeds.
"""
