"""Models: the released architectures, ResNet-9, the MLP, a user's own
Sonnet module, built by one builder and called one way.

  from heldout_tf import models
  model = models.build_model("small_inception", 10)   # the one builder
  with models.precision_scope(tf.bfloat16): ...

Submodules: `architectures` (the Sonnet modules, mixed precision),
`names` (model names and the rule for recorded ones, no TensorFlow),
`registry` (`build_model`, user modules), `calls` (calling any
module: `is_training` where it takes it, features, output checks).
A run's checkpoints and exports are the collection's
(`heldout_tf.collection.checkpoints`, `.exports`). Names load on first
use: importing the package imports no TensorFlow.
"""

from heldout_tf.core import lazy

__getattr__, __dir__, __all__ = lazy.front_door(__name__, {
    "architectures": ("MLP", "MLP_HIDDEN", "RELEASED_BN_DECAY", "ResNet9",
                      "SmallInception", "compute_dtype", "precision_scope"),
    "names": ("MODEL_NAMES", "check_name", "is_user_model",
              "recorded_model"),
    "registry": ("arch_of", "build_model", "ensure_built", "input_shape",
                 "is_built", "load_user_model"),
    "calls": ("call", "check_output", "features_and_logits",
              "has_features", "takes_is_training"),
})
