"""2-bit weights and activations on the digits CNN: LQ-Nets vs DoReFa vs LSQ, from scratch.

Run: python benchmarks/lqnet.py [--epochs 15] [--seeds 0 1 2] [--arms ...]

Every arm trains ``tfc.models.digits_binary_cnn`` (conv 32/64/128, dense 128, logits,
BatchNormalization; conv2, conv3 and dense1 quantized in weights and inputs, conv1 and
the logits float) from scratch with the budget of ``benchmarks/irnet.py`` (Adam 1e-2,
batch 32, the same epochs and seeds; one seed sets the initial weights and the batch
order of every arm). Only the quantizers of the three quantized layers differ; each
input quantizer is also the activation function there (non-negative levels):

* ``lqnet``: ``LQNetQuantizer(2, "weights", axis=-1)`` kernels (4 levels per output
  channel, basis fitted by QEM) and ``LQNetQuantizer(2, "activations")`` inputs
  (levels ``{0, v1, v2, v1 + v2}``);
* ``dorefa``: ``DoReFa(2, "weights")`` kernels (4 uniform levels in [-1, 1] of the
  tanh-normalised weights) and ``DoReFa(2, "activations")`` inputs (clip to [0, 1],
  4 uniform levels);
* ``lsq``: ``LSQQuantizer(2, axis=-1)`` kernels (the signed narrow grid: 3 levels,
  {-s, 0, s}, learned s per channel) and ``LSQQuantizer(2, signed=False)`` inputs
  ({0, s, 2s, 3s}, learned s);
* ``md_tanh2`` (not in the default arms): ``MirrorTanhQuantizer(2)`` kernels,
  mirror descent on 4 uniform levels in [-1, 1] (tanh steps, ``beta`` 1 -> 1000
  by ``QuantizerSchedule``), ``LSQQuantizer(2, signed=False)`` inputs;
* ``ste2`` (not in the default arms): the same levels and inputs, straight
  through from the first step (``beta`` fixed at 1e6): Adam + STE at 2 bits.

Reports test accuracy (359 digits) per seed, mean and sample standard deviation per
arm; writes benchmarks/results/lqnet.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

from irnet import compare

from tfcompress.quantizers import DoReFa, LQNetQuantizer, LSQQuantizer, MirrorTanhQuantizer

RESULTS = Path(__file__).parent / "results" / "lqnet.json"

# name -> (kernel_quantizer, input_quantizer, drive QuantizerSchedule)
ARMS = {
    "lqnet": (LQNetQuantizer(2, "weights", axis=-1), LQNetQuantizer(2, "activations"), False),
    "dorefa": (DoReFa(2, "weights"), DoReFa(2, "activations"), False),
    "lsq": (LSQQuantizer(2, axis=-1), LSQQuantizer(2, signed=False), False),
    # Relaxed vs straight-through on the same 4 levels in [-1, 1], LSQ inputs in both.
    "md_tanh2": (MirrorTanhQuantizer(2), LSQQuantizer(2, signed=False), True),
    "ste2": (MirrorTanhQuantizer(2, 1e6, 1e6), LSQQuantizer(2, signed=False), False),
}
DEFAULT_ARMS = ["lqnet", "dorefa", "lsq"]


def main(argv: list[str] | None = None) -> int:
    return compare(
        argv,
        arms=ARMS,
        default_arms=DEFAULT_ARMS,
        benchmark="lqnet",
        description=__doc__,
        title="2-bit W/A digits CNN from scratch",
        results=RESULTS,
    )


if __name__ == "__main__":
    sys.exit(main())
