"""Exports a restored model as ONNX, safetensors or npz, for use outside TF.

  info = exports.export(exports.model_spec("cifar10-inception"),
                        "<root>/.../0.7/0", "m.onnx", "onnx")

`model_spec(experiment)` describes a registered experiment's model; a
collection `heldout train` made describes its own
(`heldout_tf.collection.recorded.RecordedModel.export_spec`).

- **onnx**: the inference graph (`is_training=False`, BatchNorm with its
  moving statistics), one input `images` of shape `[batch, H, W, C]` float32
  NHWC with a dynamic batch (MLP: flattened, `[batch, 784]` for MNIST),
  fed exactly as the kit's
  pipeline feeds the model (see `ModelSpec.preprocessing`), one output
  `logits` `[batch, num_classes]` (no softmax). Converted by `tf2onnx`
  (opset `ONNX_OPSET`); what the input is and the layout conventions are in
  the file's `metadata_props`.
- **safetensors** / **npz**: every model variable under its checkpoint key
  (`model/.../.ATTRIBUTES/VARIABLE_VALUE`, exactly as
  `tf.train.load_checkpoint(...).get_tensor(key)` returns it), plus the same
  metadata: the safetensors header `metadata`, or an npz entry
  `__metadata__.json` (a 0-d string array holding JSON). Layouts: Conv2D
  kernels HWIO, Linear `w` [in, out], BatchNorm statistics [1, 1, 1, C] (see
  `CONVENTIONS`).

The model is restored strictly (`checkpoints.restore`). By default the file
written is checked: ONNX Runtime logits must equal TensorFlow's on a few
random inputs (max |difference| <= `PARITY_TOLERANCE` * max |logit|), the
weight files must hold the checkpoint's values exactly. tf2onnx, onnx,
onnxruntime and safetensors are the optional extra `export`.
"""

import dataclasses
import json
import os
from typing import Dict, Optional, Tuple

import numpy as np

from heldout_tf.core import errors
from heldout_tf.collection import experiments
from heldout_tf.core import files
from heldout_tf.collection import export_formats
from heldout_tf.collection.export_formats import (  # noqa: F401  (re-exported)
    BATCH_DIM, DEFAULT_CHECK_BATCH, ExportError, FORMATS, INPUT_NAME,
    METADATA_KEY, MissingExtraError, ONNX_OPSET, OUTPUT_NAME,
    PARITY_TOLERANCE, ParityError, check_onnx, check_weights, non_finite,
    onnx_logits, parse_weights, read_weights, relative_difference, to_onnx,
    weights_bytes)


MAX_CHECK_BATCH = 256  # ImageNet: 256 inputs are 154 MB.

CONVENTIONS = (
    "Keys are the TF checkpoint keys (model/<path>/.ATTRIBUTES/"
    "VARIABLE_VALUE). Conv2D 'w': [kh, kw, in, out] (HWIO), no bias, TF "
    "'SAME' padding (for stride 2 the extra row/column is padded at the "
    "bottom/right). Linear 'w': [in, out], y = x @ w + b. BatchNorm at "
    "inference: y = (x - moving_mean/average) / sqrt(moving_variance/average "
    "+ eps) * scale + offset, statistics shaped [1, 1, 1, C]; the EMA "
    "internals moving_*/_hidden and moving_*/_counter are not needed for "
    "inference. Activations are NHWC.")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What a run's model is and how its input is prepared.

  Attributes:
    experiment: the experiment's name (metadata and messages).
    arch: the model's name (`models.build_model`: a built-in name, or
      'pkg.mod:fn' a caller named).
    num_classes: logits per example.
    dataset: the dataset's name.
    input_shape: one exported input (an MLP's flattened: `[h * w * c]`).
    preprocessing: how an image becomes that input, in words.
    options: the model's constructor options, sorted (key, value) pairs.
  """
  experiment: str
  arch: str
  num_classes: int
  dataset: str
  input_shape: Tuple[int, ...]
  preprocessing: str
  options: Tuple = ()

  def random_inputs(self, n: int, seed: int = 0) -> np.ndarray:
    """`n` random inputs in the range the pipeline produces, float32."""
    x = np.random.default_rng(seed).uniform(size=(n,) + self.input_shape)
    if self.dataset == "imagenet":
      from heldout_tf.data import imagenet  # pylint: disable=g-import-not-at-top
      x = (x - np.array(imagenet.MEAN)) / np.array(imagenet.STD)
    return x.astype(np.float32)


def exported_shape(arch: str, image_shape) -> Tuple[int, ...]:
  """The exported input of one image `(h, w, c)` for model `arch`: the
  MLP's flattened (it flattens its input), others' the image's."""
  if arch == "mlp":
    return (int(np.prod(image_shape)),)
  return tuple(int(d) for d in image_shape)


@dataclasses.dataclass(frozen=True)
class ExportInfo:
  """What `export` wrote."""
  path: str
  format: str
  checkpoint: str  # The ckpt-<N> prefix restored.
  num_variables: int
  num_bytes: int
  max_relative_difference: Optional[float]  # ONNX parity check; else None.
  checked: bool


def model_spec(experiment: str) -> ModelSpec:
  """The model of an experiment of `heldout_tf.collection.experiments`."""
  e = experiments.get(experiment)
  return ModelSpec(e.name, e.arch, e.num_classes, e.dataset,
                   exported_shape(e.arch, e.input_shape), e.preprocessing)


def load_model(spec: ModelSpec, run_dir: str):
  """Builds `spec`'s model and restores it strictly from `run_dir`.

  `run_dir` is a run directory, its `checkpoints/` directory or a
  `ckpt-<N>` prefix. Returns `(model, checkpoints.RestoreInfo)`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from heldout_tf.collection import checkpoints  # pylint: disable=g-import-not-at-top
  from heldout_tf import models  # pylint: disable=g-import-not-at-top
  model = models.ensure_built(
      models.build_model(spec.arch, spec.num_classes, **dict(spec.options)),
      shape=spec.input_shape)
  try:
    info = checkpoints.restore(model, run_dir)
  except checkpoints.CheckpointNotFoundError as e:
    raise ExportError(f"--run_dir {run_dir}: no checkpoint: "
                      f"{_first_line(e)}") from e
  except checkpoints.CheckpointMismatchError as e:
    raise ExportError(_mismatch_message(spec, e)) from e
  except tf.errors.OpError as e:
    raise ExportError(f"--run_dir {run_dir}: unreadable checkpoint: "
                      f"{_first_line(e.message)}") from e
  return model, info


def _first_line(error) -> str:
  return str(error).strip().splitlines()[0] if str(error).strip() else ""


def _mismatch_message(spec: ModelSpec, e) -> str:
  """One line: which experiment, how the checkpoint differs, one example."""
  parts = []
  if e.missing:
    parts.append(f"{len(e.missing)} missing (e.g. {e.missing[0]})")
  if e.unexpected:
    parts.append(f"{len(e.unexpected)} unexpected (e.g. {e.unexpected[0]})")
  if e.shape_mismatches:
    key, ours, theirs = e.shape_mismatches[0]
    parts.append(f"{len(e.shape_mismatches)} with another shape (e.g. {key}: "
                 f"{spec.experiment} has {ours}, the checkpoint {theirs})")
  return (f"{e.path} is not a {spec.experiment} checkpoint ({spec.arch}, "
          f"{spec.num_classes} classes): {'; '.join(parts)}")


def inference_function(model, spec: ModelSpec):
  """`tf.function` images [None, *input_shape] float32 -> logits."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from heldout_tf import models  # pylint: disable=g-import-not-at-top
  signature = [tf.TensorSpec((None,) + spec.input_shape, tf.float32,
                             name=INPUT_NAME)]

  @tf.function(input_signature=signature)
  def logits(images):
    return models.call(model, images, is_training=False)

  return logits


def variables(model) -> Dict[str, np.ndarray]:
  """Checkpoint key -> value of every model variable."""
  from heldout_tf.collection import checkpoints  # pylint: disable=g-import-not-at-top
  return {key: np.asarray(var.numpy())
          for key, var in sorted(checkpoints.model_variables(model).items())}


def batch_norm_eps(model):
  """The distinct `eps` of the model's BatchNorm layers (sorted)."""
  import sonnet as snt  # pylint: disable=g-import-not-at-top
  # pylint: disable=protected-access
  return sorted({float(m._eps) for m in model.submodules
                 if isinstance(m, snt.BatchNorm)})


def metadata(spec: ModelSpec, model, checkpoint_info) -> Dict[str, str]:
  """String metadata stored in every exported file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  eps = batch_norm_eps(model)
  return {
      "heldout_tf.format_version": "1",
      "experiment": spec.experiment,
      "arch": spec.arch,
      "num_classes": str(spec.num_classes),
      "dataset": spec.dataset,
      "checkpoint": os.path.basename(checkpoint_info.path),
      "epoch": str(checkpoint_info.epoch),
      "global_step": str(checkpoint_info.global_step),
      "input_name": INPUT_NAME,
      "input_shape": json.dumps([BATCH_DIM, *spec.input_shape]),
      "input_dtype": "float32",
      "input_layout": "NC" if spec.arch == "mlp" else "NHWC",
      "input_preprocessing": spec.preprocessing,
      "output_name": OUTPUT_NAME,
      "output": f"[{BATCH_DIM}, {spec.num_classes}] float32 logits (no "
                "softmax)",
      "batch_norm_eps": json.dumps(eps) if eps else "none",
      "conventions": CONVENTIONS,
      "tensorflow_version": tf.__version__,
  }


def _write(out: str, payload: bytes):
  files.atomic_write(out, lambda f: f.write(payload))  # PathError if unwritable.


def export(spec: ModelSpec, run_dir: str, out: str, fmt: str, *,
           check: bool = True, batch_size: int = DEFAULT_CHECK_BATCH,
           opset: int = ONNX_OPSET, seed: int = 0) -> ExportInfo:
  """Restores `spec`'s model from `run_dir` and writes it to `out`.

  Args:
    spec: the run's model (`model_spec(experiment)` for a registered
      experiment; a kit collection's `RecordedModel.export_spec`).
    run_dir: run directory, its `checkpoints/` or a `ckpt-<N>` prefix.
    out: the file to write (atomically: a failed export leaves no file).
    fmt: 'onnx', 'safetensors' or 'npz'.
    check: verify the file written (ONNX parity; weights equal the
      checkpoint's). A failed check writes nothing; a run with non-finite
      weights cannot be checked (ExportError).
    batch_size: number of random inputs of the ONNX parity check (1 to
      `MAX_CHECK_BATCH`).
    opset: ONNX opset.
    seed: seed of the random inputs.

  Raises:
    UsageError, PathError, ExportError (incl. ParityError), MissingExtraError.
  """
  if fmt not in FORMATS:
    raise errors.UsageError(f"--format must be one of {', '.join(FORMATS)}, "
                            f"got {fmt!r}")
  if not 1 <= batch_size <= MAX_CHECK_BATCH:
    raise errors.UsageError(f"--batch_size must be in 1..{MAX_CHECK_BATCH}, "
                            f"got {batch_size}")
  if fmt == "onnx":  # Missing packages before any slow work.
    for module in ("tf2onnx", "onnx", "onnxruntime"):
      export_formats.require(module, fmt)
  elif fmt == "safetensors":
    export_formats.require("safetensors.numpy", fmt)
  files.check_writable(out)
  model, info = load_model(spec, run_dir)
  meta = metadata(spec, model, info)
  arrays = variables(model)
  if check and non_finite(arrays) is not None:
    raise ExportError(
        f"{info.path}: the run has non-finite weights (NaN or infinity in "
        f"{non_finite(arrays)}; did its training diverge?): the export "
        "cannot be checked (--nocheck exports them as they are)")
  difference = None
  if fmt == "onnx":
    function = inference_function(model, spec)
    payload = to_onnx(function, meta, opset)
    if check:
      difference = check_onnx(payload, function, spec, batch_size, seed)
    _write(out, payload)
  else:
    payload = weights_bytes(arrays, meta, fmt)
    if check:
      check_weights(payload, info.path)
    _write(out, payload)
  return ExportInfo(out, fmt, info.path, len(arrays), os.path.getsize(out),
                    difference, check)


def summary(info: ExportInfo) -> str:
  """Human-readable lines about an export."""
  from heldout_tf.core import sizes  # pylint: disable=g-import-not-at-top
  lines = [f"wrote {info.path} ({info.format}, {info.num_variables} "
           f"variables from {info.checkpoint}, "
           f"{sizes.format_bytes(info.num_bytes)})"]
  if info.max_relative_difference is not None:
    lines.append(f"parity: ONNX Runtime vs TensorFlow max relative logit "
                 f"difference {info.max_relative_difference:.2g} (<= "
                 f"{PARITY_TOLERANCE:g})")
  elif info.checked:
    lines.append("check: file values equal the checkpoint's")
  else:
    lines.append("not checked (--nocheck)")
  if info.format == "onnx":
    lines.append(f"input {INPUT_NAME!r} [{BATCH_DIM}, ...] float32, output "
                 f"{OUTPUT_NAME!r}; see the file's metadata_props")
  return "\n".join(lines)
