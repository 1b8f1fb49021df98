"""Training with tfcompress on several devices and workers.

tfcompress' layers, quantizers and callbacks run under ``tf.distribute``
strategies (``MirroredStrategy``, ``MultiWorkerMirroredStrategy``) and under
``keras.distribution.DataParallel`` on JAX; statistics a forward pass measures
are reduced over replicas, so every replica ends with the weights and masks of
one device (docs/distribute.md). Keras 3's own ``fit`` needs one workaround
with several worker processes: :func:`fix_keras_multiworker_fit`.
"""

from tfcompress.core.keras_multiworker import fix_keras_multiworker_fit as fix_keras_multiworker_fit

__all__ = ["fix_keras_multiworker_fit"]
