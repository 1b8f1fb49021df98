"""Demo rows for pruning: 80% magnitude pruning during fine-tuning, exported int8."""

import numpy as np

from tfcompress import models as model_zoo
from tfcompress.callbacks import GradualPruning
from tfcompress.demo.runner import DemoContext, Technique, TechniqueResult


def _pruned_int8(ctx: DemoContext) -> TechniqueResult:
    model = ctx.clone_float_model()
    epochs = max(1, ctx.epochs)
    steps = int(np.ceil(len(ctx.data.x_train) / 32))
    # Reach the target in the first two thirds, recover in the rest.
    end = max(1, (2 * epochs * steps) // 3)
    pruning = GradualPruning(
        0.8, begin_step=0, end_step=end, frequency=max(1, steps // 3), scope="global"
    )
    model_zoo.train_classifier(
        model, ctx.data, epochs=epochs, learning_rate=5e-4, callbacks=[pruning]
    )
    return TechniqueResult(
        model,
        quantization="int8",
        calibrate=True,
        note="GradualPruning 80% + int8 (gzip shows the gain)",
    )


TECHNIQUES = [Technique("pruned 80% + int8", _pruned_int8, order=40)]
