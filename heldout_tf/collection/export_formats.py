"""The files an export writes, and their checks.

ONNX: `to_onnx` converts an inference `tf.function` (input `INPUT_NAME`,
output `OUTPUT_NAME`, dynamic batch `BATCH_DIM`), `check_onnx` compares
ONNX Runtime's logits with TensorFlow's on random inputs. Weights:
`weights_bytes` serializes checkpoint key -> array as safetensors or npz
(metadata in the safetensors header or the npz entry `METADATA_KEY`),
`read_weights` / `parse_weights` read one back (npz through the hardened
reader), `check_weights` compares it with the checkpoint bit for bit.
`heldout_tf.collection.exports` restores the model and writes the file.
"""

import io
import json
from typing import Dict, Optional, Tuple

import numpy as np

from heldout_tf.core import errors
from heldout_tf.core import npz


FORMATS = ("onnx", "safetensors", "npz")

ONNX_OPSET = 17  # tf2onnx 1.16+ writes it; every onnxruntime >= 1.14 runs it.

INPUT_NAME = "images"

OUTPUT_NAME = "logits"

BATCH_DIM = "batch"

PARITY_TOLERANCE = 1e-4

DEFAULT_CHECK_BATCH = 4

METADATA_KEY = "__metadata__.json"

EXTRA_HINT = "pip install -e '.[export]'"


class ExportError(errors.HeldoutError, ValueError):
  """The run cannot be exported as asked (no checkpoint, wrong experiment)."""


class ParityError(ExportError):
  """The exported file does not reproduce the TensorFlow model."""


MissingExtraError = errors.MissingExtraError  # The `export` extra.


def require(module: str, fmt: str):
  """Optional module `module` of the `export` extra, or
  `MissingExtraError` naming --format `fmt`."""
  import importlib  # pylint: disable=g-import-not-at-top
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise MissingExtraError(f"--format {fmt} needs {module.split('.')[0]}, "
                            f"which is not installed: {EXTRA_HINT}") from e


def to_onnx(function, meta: Dict[str, str], opset: int = ONNX_OPSET) -> bytes:
  """Converts `inference_function(...)` to a serialized ONNX model."""
  tf2onnx = require("tf2onnx", "onnx")
  onnx = require("onnx", "onnx")
  proto, _ = tf2onnx.convert.from_function(
      function, input_signature=function.input_signature, opset=opset)
  _rename_output(proto.graph, OUTPUT_NAME)
  for value in list(proto.graph.input) + list(proto.graph.output):
    value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
  onnx.helper.set_model_props(proto, meta)
  proto.doc_string = (f"heldout_tf export of {meta['experiment']}: "
                      f"{meta['input_name']} {meta['input_shape']} -> "
                      f"{meta['output']}")
  return proto.SerializeToString()


def _rename_output(graph, name: str):
  """Renames the graph's single output (tf2onnx calls it `Identity:0`)."""
  (output,) = graph.output
  old = output.name
  for node in graph.node:
    node.output[:] = [name if o == old else o for o in node.output]
    node.input[:] = [name if i == old else i for i in node.input]
  output.name = name


def onnx_logits(model_bytes: bytes, images: np.ndarray) -> np.ndarray:
  """Runs a serialized ONNX model with ONNX Runtime on the CPU."""
  ort = require("onnxruntime", "onnx")
  session = ort.InferenceSession(model_bytes,
                                 providers=["CPUExecutionProvider"])
  return session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
  """max |ours - reference| / max |reference| (0 when both are all zero)."""
  scale = float(np.max(np.abs(reference)))
  diff = float(np.max(np.abs(ours - reference)))
  return diff / scale if scale > 0 else diff


def check_onnx(model_bytes: bytes, function, spec,
               batch_size: int = DEFAULT_CHECK_BATCH, seed: int = 0) -> float:
  """Max relative logit difference ONNX Runtime vs TF on random inputs.

  Raises:
    ParityError: above `PARITY_TOLERANCE`.
  """
  images = spec.random_inputs(batch_size, seed)
  reference = function(images).numpy()
  difference = relative_difference(onnx_logits(model_bytes, images),
                                    reference)
  if not difference <= PARITY_TOLERANCE:
    raise ParityError(
        f"ONNX Runtime logits differ from TensorFlow's by {difference:.3g} "
        f"of the largest logit (tolerance {PARITY_TOLERANCE:g})")
  return difference


def weights_bytes(arrays: Dict[str, np.ndarray], meta: Dict[str, str],
                  fmt: str) -> bytes:
  """`arrays` and `meta` serialized as safetensors or npz."""
  if fmt == "safetensors":
    st = require("safetensors.numpy", fmt)
    # Not np.ascontiguousarray: it turns a scalar (EMA counters) into [1].
    return st.save({k: np.array(v, order="C") for k, v in arrays.items()},
                   metadata=meta)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays, **{METADATA_KEY: np.array(json.dumps(meta))})
  return buffer.getvalue()


def read_weights(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
  """Reads an exported safetensors/npz file: `(key -> array, metadata)`.

  Only a regular file is read (a FIFO or `/dev/zero` is refused at once);
  an npz file goes through the hardened reader (`heldout_tf.core.npz`).

  Raises:
    ExportError: not a heldout_tf export, or corrupt (names the file).
    PathError: the file cannot be read.
  """
  with npz.open_regular(path, ExportError, os_error=errors.PathError) as f:
    is_npz = f.read(2) == b"PK"
    if not is_npz:
      f.seek(0)
      with errors.user_path(path, "read"):
        payload = f.read()  # A regular file: its size is bounded.
  if is_npz:
    return _read_npz_weights(path, path)
  return parse_weights(payload, path)


def _read_npz_weights(source, where: str):
  """`(arrays, metadata)` of an npz export (a path or bytes)."""
  with npz.Reader(source, ExportError, name=where,
                  os_error=errors.PathError,
                  max_total_bytes="auto") as reader:
    if METADATA_KEY not in reader:
      raise ExportError(f"{where}: no {METADATA_KEY} entry: not a heldout_tf "
                        "export")
    text = reader.read(METADATA_KEY, kinds="U", shape=())
    arrays = {key: reader.read(key)
              for key in reader.keys if key != METADATA_KEY}
  try:
    meta = json.loads(str(text))
  except ValueError as e:
    raise ExportError(f"{where}: {METADATA_KEY} is not JSON ({e})") from e
  return arrays, _checked_metadata(meta, where)


def _checked_metadata(meta, where: str) -> Dict[str, str]:
  """`meta` if it maps strings to strings (as safetensors requires)."""
  if not isinstance(meta, dict) or not all(
      isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
    raise ExportError(f"{where}: the metadata must map strings to strings, "
                      f"got {type(meta).__name__}")
  return meta


def parse_weights(payload: bytes, where: str = "<bytes>"):
  """`(key -> array, metadata)` of serialized safetensors or npz bytes."""
  if payload.startswith(b"PK"):
    return _read_npz_weights(payload, where)
  st = require("safetensors.numpy", "safetensors")
  try:
    arrays = st.load(payload)
    header_size = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8:8 + header_size])
  except Exception as e:  # pylint: disable=broad-except
    raise ExportError(f"{where}: not a safetensors file ({e})") from e
  return arrays, _checked_metadata(dict(header.get("__metadata__") or {}),
                                   where)


def non_finite(arrays: Dict[str, np.ndarray]) -> Optional[str]:
  """The first key whose floating point values are not all finite, or None."""
  for key, value in arrays.items():
    if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
      return key
  return None


def check_weights(payload: bytes, checkpoint_prefix: str):
  """Raises `ParityError` unless `payload` holds exactly the checkpoint's
  `model/...` values (keys, dtypes, shapes, bits)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  stored, _ = parse_weights(payload)
  reader = tf.train.load_checkpoint(checkpoint_prefix)
  expected = sorted(k for k in reader.get_variable_to_shape_map()
                    if k.startswith("model/"))
  if sorted(stored) != expected:
    raise ParityError(f"the exported keys differ from {checkpoint_prefix}'s")
  for key in expected:
    value = reader.get_tensor(key)
    if (stored[key].dtype != value.dtype or stored[key].shape != value.shape
        or not np.array_equal(stored[key], value)):
      raise ParityError(f"{key}: exported value differs from "
                        f"{checkpoint_prefix}")
