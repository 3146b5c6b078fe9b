"""Models: the released architectures, ResNet-9, the MLP, a user's own
Sonnet module; strict checkpoints; exports.

  from heldout_tf import models
  model = models.build("small_inception", 10)     # the one builder
  with models.precision_scope(tf.bfloat16): ...
  from heldout_tf.models import checkpoints       # restore / save

Submodules: `architectures` (the Sonnet modules, mixed precision),
`registry` (names, `build`, user modules, helpers for any module),
`checkpoints` (strict all-or-nothing restore, safe save), `exports`
(ONNX, safetensors, npz). Names load on first use: importing the package
imports no TensorFlow.
"""

from heldout_tf.core import lazy

__getattr__, __dir__, __all__ = lazy.front_door(__name__, {
    "architectures": ("MLP", "MLP_HIDDEN", "RELEASED_BN_DECAY", "ResNet9",
                      "SmallInception", "compute_dtype", "precision_scope"),
    "registry": ("ARCHS", "MODEL_NAMES", "arch_of", "build", "build_model",
                 "check_output", "ensure_built", "features_and_logits",
                 "input_shape", "is_built", "is_user_model",
                 "load_user_model", "recorded_model"),
    "checkpoints": (),
    "exports": (),
})
