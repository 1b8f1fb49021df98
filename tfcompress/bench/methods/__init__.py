"""The suite's methods: importing this package registers them (one module per family).

Add a method: write ``fn(model, run) -> Compressed`` in the module of its family
and decorate it with :func:`tfcompress.bench.register_method`.
"""

from tfcompress.bench.methods import (
    allocation_bits,  # noqa: F401
    allocation_sparsity,  # noqa: F401
    baselines,  # noqa: F401
    binary,  # noqa: F401
    clustering,  # noqa: F401
    compact,  # noqa: F401
    distillation,  # noqa: F401
    lowrank,  # noqa: F401
    oneshot,  # noqa: F401
    pruning,  # noqa: F401
    quantization,  # noqa: F401
    structured,  # noqa: F401
    tfmot,  # noqa: F401
)
