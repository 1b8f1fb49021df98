"""``compact_model``: replace the KxK convolutions of a trained model by compact blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.compact.blocks import BLOCK_KINDS, BlockKind, BlockPlan, ConvSpec, conv_macs
from tfcompress.compact.decompose import relative_error
from tfcompress.compact.report import CompactLayer, CompactReport
from tfcompress.core.rewrite import Replacement, rewrite_model
from tfcompress.core.walk import LayerSelection, layer_selector, walk_layers
from tfcompress.distillation.teacher import DistillationTeacher

__all__ = ["CompactLayer", "CompactReport", "compact_model"]

_DEFAULTS = {"rank": 1, "squeeze_ratio": 0.25, "kxk_fraction": 0.5}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_knobs(kind: BlockKind, given: dict[str, Any]) -> dict[str, Any]:
    for name, value in given.items():
        if value is not None and name not in kind.knobs:
            raise ValueError(
                f"{name}={value!r} does not apply to kind={kind.name!r}; its size knobs are "
                + ", ".join(kind.knobs)
            )
    knobs = {n: _DEFAULTS[n] if given[n] is None else given[n] for n in kind.knobs}
    if "rank" in knobs:
        if not _is_int(knobs["rank"]):
            raise TypeError(f"rank must be an int >= 1, got {knobs['rank']!r}")
        if knobs["rank"] < 1:
            raise ValueError(f"rank must be >= 1, got rank={knobs['rank']}")
    if "squeeze_ratio" in knobs:
        value = knobs["squeeze_ratio"]
        if not _is_number(value) or not 0.0 < value <= 1.0:
            raise ValueError(
                "squeeze_ratio must be a number in (0, 1] (squeeze channels over output "
                f"channels), got squeeze_ratio={value!r}"
            )
    if "kxk_fraction" in knobs:
        value = knobs["kxk_fraction"]
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise ValueError(
                "kxk_fraction must be a number in [0, 1] (fraction of the output channels "
                f"computed by the KxK expand), got kxk_fraction={value!r}"
            )
    return knobs


def _check_fine_tune(data, epochs, batch_size, teacher_weight, temperature, learning_rate):
    if data is None:
        return
    is_pair = isinstance(data, (tuple, list)) and len(data) == 2
    if not is_pair and not hasattr(data, "element_spec"):
        raise TypeError(
            "data must be None, a pair (x, y) of arrays or a tf.data.Dataset of (x, y) "
            f"batches, got {type(data).__name__}"
        )
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")
    if not _is_number(teacher_weight) or not 0.0 <= teacher_weight <= 1.0:
        raise ValueError(f"teacher_weight must be in [0, 1], got teacher_weight={teacher_weight!r}")
    for name, value in (("temperature", temperature), ("learning_rate", learning_rate)):
        if not _is_number(value) or value <= 0:
            raise ValueError(f"{name} must be a number > 0, got {name}={value!r}")


def _reason(layer: keras.layers.Layer, kind: BlockKind) -> str | None:
    """None if ``kind`` can replace ``layer``, else why not."""
    if type(layer) is not keras.layers.Conv2D:
        return f"a {type(layer).__name__}, not a keras.layers.Conv2D"
    if getattr(layer, "quantization_mode", None):
        return f"quantized by Keras ({layer.quantization_mode}); compact the float model"
    if layer.data_format != "channels_last":
        return f"data_format={layer.data_format!r}; compact blocks need 'channels_last'"
    if layer.groups != 1:
        return f"a grouped convolution (groups={layer.groups}); compact blocks need groups=1"
    if tuple(layer.kernel_size) == (1, 1):
        return "a 1x1 convolution (nothing spatial to factor)"
    return kind.unsupported(ConvSpec.from_layer(layer))


def _random_input(spec: ConvSpec, rng: np.random.Generator) -> np.ndarray:
    hw = [
        n if n is not None else max(8, 2 * ((k - 1) * d + 1) + s)
        for n, k, s, d in zip(spec.input_hw, spec.kernel_size, spec.strides, spec.dilation)
    ]
    return rng.standard_normal((2, *hw, spec.cin)).astype("float32")


def _output_error(old: keras.layers.Layer, new: keras.Model, spec: ConvSpec) -> float:
    x = _random_input(spec, np.random.default_rng(0))
    ref = np.asarray(keras.ops.convert_to_numpy(old(x)), dtype=np.float64)
    got = np.asarray(keras.ops.convert_to_numpy(new(x)), dtype=np.float64)
    return relative_error(ref, got)


def _conv_label(spec: ConvSpec) -> str:
    text = f"{spec.kernel_size[0]}x{spec.kernel_size[1]} {spec.cin}->{spec.cout}"
    if spec.strides != (1, 1):
        text += " s" + ("x".join(map(str, spec.strides)) if len(set(spec.strides)) > 1 else
                        str(spec.strides[0]))  # fmt: skip
    if spec.dilation != (1, 1):
        text += f" d{spec.dilation[0]}" if len(set(spec.dilation)) == 1 else f" d{spec.dilation}"
    return f"{text} {spec.padding}"


def compact_model(
    model: keras.Model,
    kind: str = "separable",
    layers: LayerSelection = None,
    *,
    rank: int | None = None,
    squeeze_ratio: float | None = None,
    kxk_fraction: float | None = None,
    data: Any = None,
    epochs: int = 1,
    batch_size: int = 32,
    teacher_weight: float = 0.5,
    temperature: float = 4.0,
    learning_rate: float = 1e-3,
    optimizer: keras.optimizers.Optimizer | None = None,
    loss: Any = None,
    return_report: bool = False,
    verbose: int = 1,
) -> keras.Model | tuple[keras.Model, CompactReport]:
    """A copy of ``model`` with its KxK ``Conv2D`` layers replaced by compact blocks.

    Each replaced convolution (``keras.layers.Conv2D`` exactly, kernel larger
    than 1x1, ``groups=1``, ``channels_last``) becomes a small nested model of
    stock Keras layers with the layer's name, the same output shape (any
    strides, padding and dilation) and weights computed from the trained
    kernel ``W`` (``kh, kw, cin, cout``); its bias and activation end the
    block. Other layers keep their weights; the original model is untouched.

    * ``"separable"`` (MobileNet, Xception): ``DepthwiseConv2D(KxK,
      depth_multiplier=rank)`` then a 1x1 ``Conv2D``. For every input channel
      ``c``, ``W[:, :, c, :]`` as a ``(kh*kw, cout)`` matrix is replaced by its
      rank-``r`` truncated SVD ``U_r S_r V_r^T``: ``U_r S_r`` are the ``r``
      depthwise filters of ``c``, ``V_r^T`` their pointwise weights. Exact for
      ``r = min(kh*kw, cout)`` (a larger rank is lowered to that). Kernel
      parameters ``kh*kw*cin*r + cin*r*cout``.
    * ``"flattened"`` (Jin et al.): per path, a 1x1 lateral ``Conv2D``
      (``cin -> cout``), a ``(kh, 1)`` vertical and a ``(1, kw)`` horizontal
      ``DepthwiseConv2D``; ``rank`` paths are added. Filter ``o`` becomes
      ``sum_k b_ok (x) c_ok (x) a_ok`` (vertical, horizontal, lateral 1-D
      filters), the rank-``r`` CP approximation of ``W[:, :, :, o]`` by
      alternating least squares (NumPy; exact for filters of CP rank <= r
      found by ALS, e.g. rank-1 filters at ``rank=1``). The vertical stage
      takes the vertical stride, the horizontal one the horizontal stride.
      Kernel parameters ``r * cout * (cin + kh + kw)``.
    * ``"fire"`` (SqueezeNet): a linear 1x1 squeeze to ``s = round(squeeze_ratio
      * cout)`` channels (at most ``cin``), then a 1x1 expand to ``e1`` and a KxK
      expand to ``e3 = round(kxk_fraction * cout)`` channels, concatenated
      (``e1 + e3 = cout``; channels ``[0, e1)`` come from the 1x1 expand). The
      1x1 expand is aligned on the KxK centre tap and initialised from it, so
      those channels lose their off-centre taps; the squeeze is the top-``s``
      input-channel singular directions of the part of ``W`` the block can
      represent (the centre tap of channels ``[0, e1)`` and all of channels
      ``[e1, cout)``, unfolded to ``(cin, ...)``), the expands are that part
      projected on them: the best such block for a given ``s`` (Eckart-Young).
      The report gives the kernel and output errors. Kernel parameters
      ``cin*s + s*e1 + kh*kw*s*e3``.

    With ``data``, the compact model is compiled (``optimizer``, default
    ``Adam(learning_rate)``; ``loss``, default the original's compiled loss or
    ``SparseCategoricalCrossentropy(from_logits=True)``) and fitted for
    ``epochs`` with :class:`~tfcompress.distillation.DistillationTeacher`
    (the original model as teacher, ``alpha=teacher_weight``,
    ``temperature``): the loss is ``(1 - teacher_weight) * loss +
    teacher_weight * T^2 KL(teacher || student)`` on the outputs (logits).

    Args:
        model: A built Sequential or Functional model (nested models entered).
        kind: ``"separable"``, ``"flattened"`` or ``"fire"``.
        layers: Which layers to replace (names, classes, class names or a
            predicate; default every eligible ``Conv2D``). A layer named here
            that is not an eligible Conv2D is an error; other ineligible
            convolutions are left as they were and listed in the report.
        rank: ``"separable"``: the depth multiplier; ``"flattened"``: the CP
            rank (parallel paths). Default 1.
        squeeze_ratio: ``"fire"``: squeeze channels over output channels, in
            ``(0, 1]``; default 0.25.
        kxk_fraction: ``"fire"``: fraction of output channels from the KxK
            expand, in ``[0, 1]``; default 0.5 (SqueezeNet's pct3x3).
        data: ``None`` (no fine-tune), ``(x, y)`` arrays or a ``tf.data.Dataset``
            of ``(x, y)`` batches.
        epochs, batch_size, learning_rate: Of the fine-tune (``batch_size`` for
            arrays only).
        teacher_weight: Weight of the teacher's term, in ``[0, 1]``.
        temperature: Softmax temperature of the teacher's term, ``> 0``.
        optimizer, loss: Override the fine-tune's optimizer and loss.
        return_report: Also return a :class:`CompactReport`.
        verbose: 0 silent, 1 prints the report, 2 also shows ``fit`` progress.

    Returns:
        The compact model (compiled only if fine-tuned), or ``(model, report)``.

    Raises:
        ValueError: An unknown ``kind``; a knob of another kind, ``rank < 1``,
            ``squeeze_ratio`` outside (0, 1], ``kxk_fraction`` outside [0, 1];
            a bad fine-tune argument; a ``layers`` selection matching nothing,
            or naming a Conv2D that cannot be replaced (1x1, grouped, ...); no
            eligible convolution. All raised before anything is built.
        TypeError: A non-integer ``rank``; ``data`` of another type; a layer
            named in ``layers`` that is not a Conv2D; a subclassed model.

    Example:
        >>> small, report = tfc.compact_model(model, "separable", rank=2, return_report=True)
        >>> print(report)  # per layer: params, MACs, kernel and output errors
        >>> tuned = tfc.compact_model(model, "fire", squeeze_ratio=0.25,
        ...                           data=(x, y), epochs=2, teacher_weight=0.7)

    References:
        Jin, Dundar, Culurciello. "Flattened convolutional neural networks for
        feedforward acceleration", ICLR workshop 2015.
        Howard et al. "MobileNets: Efficient Convolutional Neural Networks for
        Mobile Vision Applications", 2017. Chollet. "Xception", CVPR 2017.
        Iandola et al. "SqueezeNet: AlexNet-level accuracy with 50x fewer
        parameters and <0.5MB model size", 2016.
        Szegedy et al. "Rethinking the Inception Architecture for Computer
        Vision", CVPR 2016 (factorised KxK -> Kx1 + 1xK convolutions).
    """
    if not isinstance(kind, str) or kind not in BLOCK_KINDS:
        raise ValueError(f"kind must be one of {sorted(BLOCK_KINDS)}, got kind={kind!r}")
    block_kind = BLOCK_KINDS[kind]
    knobs = _check_knobs(
        block_kind, {"rank": rank, "squeeze_ratio": squeeze_ratio, "kxk_fraction": kxk_fraction}
    )
    _check_fine_tune(data, epochs, batch_size, teacher_weight, temperature, learning_rate)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built; build it (keras.Input) first")

    plans, skipped = _plan(model, block_kind, layers, knobs)
    teacher = (
        None if data is None else DistillationTeacher(model, temperature, alpha=teacher_weight)
    )

    built: dict[str, tuple[keras.Model, keras.layers.Layer]] = {}

    def replace(layer: keras.layers.Layer) -> Replacement | None:
        entry = plans.get(id(layer))
        if entry is None:
            return None
        qualified, spec, plan = entry
        common = {"dtype": layer.dtype_policy, "trainable": layer.trainable}
        block = block_kind.build(spec, plan, layer.activation, common)

        def initialize(new: keras.Model, old: keras.layers.Layer) -> None:
            for sub_name, arrays in plan.weights.items():
                sub = new.get_layer(sub_name)
                sub.set_weights([np.asarray(a, dtype=v.dtype) for a, v in zip(arrays, sub.weights)])
            built[qualified] = (new, old)

        return Replacement(block, initialize)

    new_model, _ = rewrite_model(model, replace)

    entries = []
    for qualified, spec, plan in plans.values():
        block, old = built[qualified]
        kernel = np.asarray(keras.ops.convert_to_numpy(old.kernel), dtype=np.float64)
        entries.append(
            CompactLayer(
                name=qualified,
                kind=kind,
                conv=_conv_label(spec),
                config=plan.describe(),
                params_before=spec.params(),
                params_after=int(block.count_params()),
                macs_before=spec.macs(),
                macs_after=conv_macs(block),
                kernel_error=relative_error(kernel, plan.composed),
                output_error=_output_error(old, block, spec),
            )
        )
    report = CompactReport(
        kind=kind,
        layers=entries,
        skipped=skipped,
        params_before=int(model.count_params()),
        params_after=int(new_model.count_params()),
    )
    if teacher is not None:
        report.fine_tune_loss = _fine_tune(
            new_model, model, teacher, data, epochs, batch_size, learning_rate, optimizer, loss,
            verbose,
        )  # fmt: skip
    if verbose:
        print(report.to_string())
    return (new_model, report) if return_report else new_model


def _plan(
    model: keras.Model, kind: BlockKind, layers: LayerSelection, knobs: dict[str, Any]
) -> tuple[dict[int, tuple[str, ConvSpec, BlockPlan]], list[tuple[str, str, str]]]:
    """The block of every convolution to replace (NumPy only), and the ones left out."""
    selector = layer_selector(layers, model)
    # Layers named explicitly must be replaceable; classes and predicates just select.
    if isinstance(layers, str):
        named = {layers}
    elif isinstance(layers, Sequence):
        named = {x for x in layers if isinstance(x, str)}
    else:
        named = set()
    plans: dict[int, tuple[str, ConvSpec, BlockPlan]] = {}
    skipped: list[tuple[str, str, str]] = []
    for qualified, layer in walk_layers(model):
        if id(layer) in plans or not selector(layer):
            continue
        reason = _reason(layer, kind)
        if reason is not None:
            if qualified in named or layer.name in named:
                error = TypeError if not isinstance(layer, keras.layers.Conv2D) else ValueError
                raise error(
                    f"layers={layers!r}: layer {qualified!r} cannot be replaced by a "
                    f"{kind.name!r} block: it is {reason}"
                )
            if isinstance(layer, keras.layers.Conv2D):
                skipped.append((qualified, type(layer).__name__, reason))
            continue
        spec = ConvSpec.from_layer(layer)
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float64)
        bias = (
            np.asarray(keras.ops.convert_to_numpy(layer.bias), dtype=np.float64)
            if layer.use_bias
            else None
        )
        plans[id(layer)] = (qualified, spec, kind.plan(kernel, bias, spec, knobs))
    if not plans:
        details = "; ".join(f"{n}: {why}" for n, _, why in skipped) or "no Conv2D layer"
        raise ValueError(
            f"compact_model(kind={kind.name!r}, layers={layers!r}) found no convolution to "
            f"replace in model {model.name!r} (a KxK keras.layers.Conv2D with K > 1, "
            f"groups=1, channels_last is expected): {details}"
        )
    return plans, skipped


def _fine_tune(
    student, teacher_model, teacher, data, epochs, batch_size, learning_rate, optimizer, loss,
    verbose,
) -> list[float]:  # fmt: skip
    if loss is None:
        loss = getattr(teacher_model, "loss", None) or keras.losses.SparseCategoricalCrossentropy(
            from_logits=True
        )
    student.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate), loss=loss)
    fit_verbose = 2 if verbose >= 2 else 0
    if isinstance(data, (tuple, list)):
        x, y = data
        history = student.fit(
            x, y, epochs=epochs, batch_size=batch_size, callbacks=[teacher], verbose=fit_verbose
        )
    else:
        history = student.fit(
            data, epochs=epochs, callbacks=[teacher], verbose=fit_verbose, shuffle=False
        )
    return [float(v) for v in history.history.get("loss", [])]
