"""A callback that crashes a fit at a chosen optimizer step (for resume tests)."""

import keras


class CrashAt(keras.callbacks.Callback):
    """Raises ``KeyboardInterrupt`` after the train step that brings the optimizer to ``step``."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise KeyboardInterrupt("simulated crash")
