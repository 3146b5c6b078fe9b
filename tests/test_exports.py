"""Export: ONNX parity with TF, exact weight round trips, one-line errors."""

import io
import json
import os
import subprocess
import sys
import threading
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf

from heldout_tf.collection import checkpoints
from heldout_tf import cli
from heldout_tf.cli import export
from heldout_tf.collection import export_formats
from heldout_tf.collection import exports
from heldout_tf import models
from heldout_tf import synthetic

EXPERIMENT_OF = {"mlp": ("mnist-mlp", 10),
                 "small_inception": ("cifar10-inception", 10),
                 "resnet50": ("imagenet-resnet50", 1000)}


def saved_run(root, arch, seed=1):
  """A run directory holding one checkpoint of a random `arch` model with
  non-trivial BatchNorm statistics; returns `(run_dir, model)`."""
  _, num_classes = EXPERIMENT_OF[arch]
  model = synthetic.randomize(models.build_model(arch, num_classes),
                                     arch, seed)
  run = os.path.join(str(root), arch, "run")
  checkpoints.save(model, os.path.join(run, "checkpoints"), step=7, epoch=3,
                   global_step=70)
  return run, model


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
  return saved_run(tmp_path_factory.mktemp("mlp"), "mlp")


@pytest.fixture(scope="module")
def inception_run(tmp_path_factory):
  return saved_run(tmp_path_factory.mktemp("inception"), "small_inception")


def run_cli(argv, capsys):
  """Runs the export CLI in-process: `(exit code, stdout, stderr)`."""
  with pytest.raises(SystemExit) as exit_info:
    cli.run(export.main, argv)
  out, err = capsys.readouterr()
  return exit_info.value.code, out, err


def assert_onnx_matches_tf(path, model, arch, seed=5):
  """The ONNX file's logits equal the TF model's, for two batch sizes."""
  session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
  (inp,), (out,) = session.get_inputs(), session.get_outputs()
  assert (inp.name, out.name) == ("images", "logits")
  assert inp.shape[0] == "batch"
  rng = np.random.default_rng(seed)
  for n in (1, 3):
    images = rng.uniform(size=(n,) + models.input_shape(arch)).astype(
        np.float32)
    if arch == "resnet50":
      images = (images - 0.45) / 0.225
    reference = model(images, is_training=False).numpy()
    feed = images.reshape(n, -1) if arch == "mlp" else images
    logits = session.run(None, {"images": feed})[0]
    assert logits.shape == reference.shape
    scale = np.abs(reference).max()
    assert np.abs(logits - reference).max() <= 1e-4 * scale


@pytest.mark.parametrize("arch", ["mlp", "small_inception"])
def test_onnx_logits_equal_tf_logits(arch, mlp_run, inception_run, tmp_path,
                                     capsys):
  run, model = {"mlp": mlp_run, "small_inception": inception_run}[arch]
  out = str(tmp_path / f"{arch}.onnx")
  code, stdout, _ = run_cli(
      ["--experiment", EXPERIMENT_OF[arch][0], "--run_dir", run,
       "--format", "onnx", "--out", out], capsys)
  assert code == 0
  assert "parity" in stdout and out in stdout
  assert_onnx_matches_tf(out, model, arch)


def test_onnx_metadata_documents_the_input(inception_run, tmp_path):
  run, _ = inception_run
  out = str(tmp_path / "m.onnx")
  info = exports.export(exports.model_spec("cifar10-inception"), os.path.join(run, "checkpoints",
                                                          "ckpt-7"),
                        out, "onnx")
  assert info.max_relative_difference <= exports.PARITY_TOLERANCE
  props = {p.key: p.value for p in onnx.load(out).metadata_props}
  assert props["experiment"] == "cifar10-inception"
  assert props["input_name"] == "images"
  assert json.loads(props["input_shape"]) == ["batch", 32, 32, 3]
  assert "/ 255.0" in props["input_preprocessing"]
  assert "mean/std" in props["input_preprocessing"]  # ... none, for CIFAR.
  assert json.loads(props["batch_norm_eps"]) == [1e-5]
  assert (props["checkpoint"], props["epoch"]) == ("ckpt-7", "3")


@pytest.mark.slow
def test_resnet50_onnx_logits_equal_tf_logits(tmp_path, capsys):
  run, model = saved_run(tmp_path, "resnet50")
  out = str(tmp_path / "resnet50.onnx")
  code, _, err = run_cli(
      ["--experiment", "imagenet-resnet50", "--run_dir", run, "--format",
       "onnx", "--out", out, "--batch_size", "2"], capsys)
  assert code == 0, err
  props = {p.key: p.value for p in onnx.load(out).metadata_props}
  assert "0.485" in props["input_preprocessing"]
  assert_onnx_matches_tf(out, model, "resnet50")


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_weights_equal_checkpoint_values(fmt, inception_run, tmp_path,
                                         capsys):
  run, _ = inception_run
  out = str(tmp_path / f"weights.{fmt}")
  code, _, err = run_cli(["--experiment", "cifar10-inception", "--run_dir",
                          run, "--format", fmt, "--out", out], capsys)
  assert code == 0, err
  arrays, meta = exports.read_weights(out)
  reader = tf.train.load_checkpoint(checkpoints.find_checkpoint(run))
  keys = sorted(k for k in reader.get_variable_to_shape_map()
                if k.startswith("model/"))
  assert sorted(arrays) == keys
  for key in keys:
    expected = reader.get_tensor(key)
    assert arrays[key].dtype == expected.dtype, key
    np.testing.assert_array_equal(arrays[key], expected, err_msg=key)
  moving = [k for k in keys if "moving_variance/average" in k]
  assert moving and all(not np.allclose(arrays[k], 1.0) for k in moving)
  assert meta["arch"] == "small_inception" and meta["num_classes"] == "10"
  assert "HWIO" in meta["conventions"]
  assert json.loads(meta["batch_norm_eps"]) == [1e-5]


def test_npz_export_loads_without_pickle(mlp_run, tmp_path):
  run, model = mlp_run
  out = str(tmp_path / "mlp.npz")
  exports.export(exports.model_spec("mnist-mlp"), run, out, "npz")
  with np.load(out, allow_pickle=False) as npz:
    meta = json.loads(str(npz["__metadata__.json"]))
    w0 = npz["model/net/_layers/0/w/.ATTRIBUTES/VARIABLE_VALUE"]
  assert meta["input_shape"] == '["batch", 784]'
  np.testing.assert_array_equal(w0, model.layers[0].w.numpy())


def test_bad_run_dir_is_one_error_line(tmp_path, capsys):
  out = tmp_path / "m.onnx"
  code, _, err = run_cli(["--experiment", "cifar10-inception", "--run_dir",
                          str(tmp_path / "nowhere"), "--format", "onnx",
                          "--out", str(out)], capsys)
  assert code == 1
  assert err.startswith("error: --run_dir ") and err.count("\n") == 1
  assert not out.exists()


def test_wrong_experiment_is_one_error_line(inception_run, tmp_path, capsys):
  run, _ = inception_run  # 10 classes, restored as a 100-class model.
  out = tmp_path / "m.npz"
  code, _, err = run_cli(["--experiment", "cifar100-inception", "--run_dir",
                          run, "--format", "npz", "--out", str(out)], capsys)
  assert code == 1 and err.count("\n") == 1
  assert "not a cifar100-inception checkpoint" in err
  assert "model/_pred/" in err
  assert not out.exists()


def test_unknown_experiment_and_bad_flags_are_usage_errors(tmp_path, capsys):
  code, _, err = run_cli(["--experiment", "cifar10-resnet", "--run_dir",
                          str(tmp_path), "--format", "npz", "--out",
                          str(tmp_path / "x.npz")], capsys)
  assert code == 2 and err.startswith("error: --experiment 'cifar10-resnet'")
  code, _, err = run_cli(["--experiment", "mnist-mlp", "--run_dir",
                          str(tmp_path), "--format", "pt", "--out", "x"],
                         capsys)
  assert code == 2 and err.startswith("error: argument --format")
  code, _, err = run_cli(["--experiment", "mnist-mlp", "--run_dir",
                          str(tmp_path), "--format", "onnx", "--out", "x",
                          "--batch_size", str(10**9)], capsys)
  assert code == 2 and err == ("error: --batch_size must be in 1..256, got "
                               "1000000000\n")


def test_help_does_not_import_tensorflow():
  code = ("import sys; from heldout_tf.cli import export; "
          "export.build_parser().format_help(); "
          "assert 'tensorflow' not in sys.modules, 'imported'")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_unwritable_out_fails_before_restoring(mlp_run, tmp_path, capsys):
  run, _ = mlp_run
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  code, _, err = run_cli(["--experiment", "mnist-mlp", "--run_dir", run,
                          "--format", "npz", "--out",
                          str(blocker / "m.npz")], capsys)
  assert code == 1
  assert err == (f"error: cannot write {blocker / 'm.npz'}: {blocker} is not "
                 "a directory\n")
  code, _, err = run_cli(["--experiment", "mnist-mlp", "--run_dir", run,
                          "--format", "npz", "--out", str(tmp_path)], capsys)
  assert code == 1
  assert err == (f"error: cannot write {tmp_path}: it is a directory, not a "
                 "regular file (remove it or choose another path)\n")


def test_missing_extra_names_the_install_command(mlp_run, tmp_path,
                                                 monkeypatch, capsys):
  run, _ = mlp_run
  monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import -> ImportError
  code, _, err = run_cli(["--experiment", "mnist-mlp", "--run_dir", run,
                          "--format", "onnx", "--out",
                          str(tmp_path / "m.onnx")], capsys)
  assert code == 1
  assert "tf2onnx" in err and "pip install -e '.[export]'" in err


def test_parity_failure_is_an_error_and_writes_nothing(mlp_run, tmp_path,
                                                       monkeypatch, capsys):
  run, _ = mlp_run
  real = export_formats.onnx_logits
  monkeypatch.setattr(export_formats, "onnx_logits",
                      lambda model, images: real(model, images) * 1.01)
  out = tmp_path / "m.onnx"
  argv = ["--experiment", "mnist-mlp", "--run_dir", run, "--format", "onnx",
          "--out", str(out)]
  code, _, err = run_cli(argv, capsys)
  assert code == 1 and "ONNX Runtime logits differ" in err
  assert not out.exists() and os.listdir(tmp_path) == []
  code, stdout, _ = run_cli(argv + ["--nocheck"], capsys)
  assert code == 0 and "not checked" in stdout and out.exists()


def test_corrupt_weights_fail_the_check(inception_run, tmp_path):
  run, _ = inception_run
  prefix = checkpoints.find_checkpoint(run)
  model = models.ensure_built(models.build_model("small_inception", 10),
                              "small_inception")
  checkpoints.restore(model, run)
  arrays = exports.variables(model)
  key = next(k for k in arrays if "moving_mean/average" in k)
  arrays[key] = arrays[key] + np.float32(1e-3)
  payload = exports.weights_bytes(arrays, {"a": "b"}, "safetensors")
  with pytest.raises(exports.ParityError, match="moving_mean/average"):
    exports.check_weights(payload, prefix)


def test_corrupt_checkpoint_is_one_error_line(tmp_path, capsys):
  run, _ = saved_run(tmp_path, "mlp")
  (data_file,) = [os.path.join(run, "checkpoints", f)
                  for f in os.listdir(os.path.join(run, "checkpoints"))
                  if ".data-" in f]
  with open(data_file, "r+b") as f:
    f.truncate(100)
  code, _, err = run_cli(["--experiment", "mnist-mlp", "--run_dir", run,
                          "--format", "npz", "--out",
                          str(tmp_path / "m.npz")], capsys)
  assert code == 1 and err.count("\n") == 1
  assert err.startswith("error: ") and run in err
  assert not (tmp_path / "m.npz").exists()


def test_tampered_npz_metadata_is_an_export_error(tmp_path):
  path = str(tmp_path / "w.npz")
  np.savez(path, **{exports.METADATA_KEY: np.array("{not json"),
                    "model/w": np.zeros(2, np.float32)})
  with pytest.raises(exports.ExportError, match="not JSON"):
    exports.read_weights(path)


@pytest.mark.parametrize("meta", [[1, 2], 3, {"a": 1}])
def test_metadata_must_map_strings_to_strings_in_both_formats(tmp_path,
                                                              meta):
  path = str(tmp_path / "w.npz")
  np.savez(path, **{exports.METADATA_KEY: np.array(json.dumps(meta)),
                    "model/w": np.zeros(2, np.float32)})
  with pytest.raises(exports.ExportError, match="map strings to strings"):
    exports.read_weights(path)
  header = json.dumps({"__metadata__": meta, "model/w": {
      "dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
  payload = len(header).to_bytes(8, "little") + header + bytes(8)
  with pytest.raises(exports.ExportError):
    exports.parse_weights(payload, "w.safetensors")


def test_special_files_are_refused_without_blocking(tmp_path):
  fifo = str(tmp_path / "w.npz")
  os.mkfifo(fifo)
  outcome = synthetic.refusals(fifo, exports.ExportError,
                               lambda: exports.read_weights(fifo))
  assert outcome == [f"{fifo}: not a regular file (a FIFO)"]
  zero = str(tmp_path / "w.safetensors")
  os.symlink("/dev/zero", zero)
  with pytest.raises(exports.ExportError, match="a character device"):
    exports.read_weights(zero)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_npz_exports_are_export_errors(mlp_run, tmp_path, damage):
  run, _ = mlp_run
  out = str(tmp_path / "m.npz")
  exports.export(exports.model_spec("mnist-mlp"), run, out, "npz")
  data = bytearray(open(out, "rb").read())
  if damage == "truncate":
    data = data[:len(data) // 2]
  else:  # A byte inside the first layer's weights.
    data[len(data) // 3] ^= 0xFF
  with open(out, "wb") as f:
    f.write(data)
  with pytest.raises(exports.ExportError) as e:
    exports.read_weights(out)
  assert str(e.value).startswith(out)


def test_a_compressed_bomb_is_refused_before_it_inflates(tmp_path):
  members = {exports.METADATA_KEY: np.array("{}"),
             "model/w": np.zeros(1 << 30, np.uint8)}  # 1 GiB -> ~1 MiB.
  path = str(tmp_path / "w.npz")
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    for key, value in members.items():
      buffer = io.BytesIO()
      np.save(buffer, value)
      zf.writestr(key + ".npy", buffer.getvalue())
  del members
  assert os.path.getsize(path) < 2 << 20
  with pytest.raises(exports.ExportError, match="more than the 268435456 "
                     "allowed"):
    exports.read_weights(path)


def test_diverged_run_says_its_weights_are_not_finite(tmp_path, capsys):
  model = models.ensure_built(models.build_model("mlp", 10), "mlp")
  model.layers[0].w.assign(tf.fill(model.layers[0].w.shape, np.nan))
  run = str(tmp_path / "run")
  checkpoints.save(model, os.path.join(run, "checkpoints"), step=1)
  out = tmp_path / "m.npz"
  argv = ["--experiment", "mnist-mlp", "--run_dir", run, "--format", "npz",
          "--out", str(out)]
  code, _, err = run_cli(argv, capsys)
  assert code == 1 and "the run has non-finite weights" in err
  assert "model/net/_layers/0/w/" in err and not out.exists()
  code, _, _ = run_cli(argv + ["--nocheck"], capsys)
  assert code == 0 and out.exists()


def test_a_fifo_named_like_a_checkpoint_index_is_refused(tmp_path, capsys):
  checkpoint_dir = tmp_path / "run" / "checkpoints"
  checkpoint_dir.mkdir(parents=True)
  os.mkfifo(checkpoint_dir / "ckpt-1.index")
  outcome = []

  def export_it():
    try:
      outcome.append(run_cli(["--experiment", "mnist-mlp", "--run_dir",
                              str(tmp_path / "run"), "--format", "npz",
                              "--out", str(tmp_path / "m.npz")], capsys))
    except BaseException as e:  # pylint: disable=broad-except
      outcome.append(e)

  thread = threading.Thread(target=export_it, daemon=True)
  thread.start()
  thread.join(120)
  if thread.is_alive():
    os.close(os.open(checkpoint_dir / "ckpt-1.index",
                     os.O_WRONLY | os.O_NONBLOCK))
    pytest.fail("export blocked on a FIFO")
  code, _, err = outcome[0]
  assert code == 1 and "ckpt-1.index: not a regular file (a FIFO)" in err
