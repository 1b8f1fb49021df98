"""Binary and ternary networks: Binary* layers, Bop, FlipRatio, packed storage and
freeze_binary. The quantizers they use belong to the one quantizer system in
:mod:`tfcompress.quantization`."""
