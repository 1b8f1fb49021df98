"""TFMOT's ``prune_low_magnitude`` as a suite method (the anchor to beat), in a tf_keras
subprocess (:mod:`tfcompress.bench.tfmot_subprocess`): it starts from the same
trained model and fine-tunes with the same budget and schedule as
``gradual_magnitude``, so the two differ by the implementation only. The file is
the one TFMOT's documented path writes (``strip_pruning``, the default float
converter); the arm's model is ours with TFMOT's pruned weights, for the counts."""

from __future__ import annotations

import keras
import numpy as np

from tfcompress.bench.api import Compressed, MethodRun, register_method
from tfcompress.bench.methods.budget import schedule_steps
from tfcompress.bench.methods.common import copy_model
from tfcompress.bench.tfmot_subprocess import tfmot_prune
from tfcompress.core.io import write_bytes
from tfcompress.export.interpreter import TFLiteModel

__all__: list[str] = []


@register_method(
    "tfmot_magnitude",
    relative_cost=2,
    family="baseline",
    levels=(0.5, 0.7, 0.8, 0.9),
    quick_levels=(0.5, 0.9),
    level_name="sparsity",
    applies_to=("workload:digits_cnn", "workload:lenet_300_100"),
    description="TFMOT 0.8 prune_low_magnitude (tf_keras subprocess), same schedule and budget "
    "as gradual_magnitude; float TFLite from TFMOT's converter path",
)
def tfmot_magnitude(model: keras.Model, run: MethodRun) -> Compressed:
    workload = run.workload
    end, frequency = schedule_steps(workload)
    result = tfmot_prune(
        model,
        workload.data(),
        run.level,
        epochs=workload.finetune_epochs,
        end_step=end,
        frequency=frequency,
        batch_size=workload.batch_size,
        learning_rate=workload.finetune_learning_rate,
        seed=1000 + run.seed,
        exports=("float",),
        whole_batches=True,
    )
    pruned = copy_model(model)
    pruned.set_weights(result.weights)
    flatbuffer = result.files["float"]
    # The file must compute what the pruned weights compute: checked on 16 test inputs.
    sample = workload.data().x_test[:16]
    tflite = TFLiteModel(flatbuffer, num_threads=1).predict(sample, batch_size=16)
    if isinstance(tflite, dict):  # tf_keras' converter names its one output
        (tflite,) = tflite.values()
    difference = float(np.max(np.abs(np.asarray(tflite) - pruned.predict(sample, verbose=0))))
    if not np.isfinite(difference) or difference > 1e-3:
        raise RuntimeError(
            f"TFMOT's TFLite file disagrees with its pruned weights (max |diff| {difference:g})"
        )

    def export(path: str) -> None:
        write_bytes(path, flatbuffer)

    return Compressed(
        pruned,
        export=export,
        quality={workload.metric: result.accuracy},
        notes=(
            f"TFMOT {result.versions['tfmot']} / tf_keras {result.versions['tf_keras']}; "
            f"kernel sparsity {result.sparsity:.3f}; file vs weights max |diff| {difference:.2g}"
        ),
    )
