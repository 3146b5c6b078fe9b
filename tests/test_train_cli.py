"""python -m heldout_tf.cli.train: flags, many ratios, resume, Ray, errors."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from heldout_tf import collection
from heldout_tf.core import errors
from heldout_tf import estimates
from heldout_tf.collection import layout
from heldout_tf.collection import selection
from heldout_tf.training import recipes
from heldout_tf.training import workflow
from heldout_tf import report
from heldout_tf.collection import runs as runs_lib
from heldout_tf.cli import train

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _npz(path, n_train=40, n_test=16, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n_train + n_test)
  images = (rng.integers(0, 60, (n_train + n_test, 8, 8, 1))
            + 60 * labels[:, None, None, None]).astype(np.uint8)
  np.savez(path, x_train=images[:n_train], y_train=labels[:n_train],
           x_test=images[n_train:], y_test=labels[n_train:])
  return str(path)


def _options(data, root, **changes):
  changes = dict(dict(epochs=1), **changes)
  if ":" in str(changes.get("model", "")):
    changes.setdefault("recipe", "mnist-mlp")  # Own modules need a recipe.
  argv = ["--dataset", "npz:" + data, "--model", "mlp", "--batch_size", "8",
          "--root", str(root), "--noprogress"]
  for key, value in changes.items():
    argv += [f"--{key}", str(value)]
  return train.parse_args(argv)


def _cli(*argv):
  env = dict(os.environ, PYTHONPATH=ROOT_DIR)
  return subprocess.run([sys.executable, "-m", "heldout_tf.cli.train", *argv],
                        capture_output=True, text=True, env=env, cwd=ROOT_DIR,
                        timeout=300)


def test_parser_needs_no_tensorflow(imports_tensorflow):
  assert not imports_tensorflow(
      "from heldout_tf.cli import train; train.build_parser().format_help(); "
      "train.parse_args(['--dataset', 'mnist'])")


def test_one_ratio_grammar_in_every_command():
  assert train.parse_args(["--dataset", "digits", "--ratios", "0.7"]
                          ).ratios == (0.7,)
  assert train.parse_args(["--dataset", "digits", "--ratios", "0.5,0.1,0.5"]
                          ).ratios == (0.1, 0.5)
  assert train.parse_args(["--dataset", "digits", "--ratios", "0.1:0.9:0.1"]
                          ).ratios == tuple(round(0.1 * k, 1)
                                            for k in range(1, 10))
  for bad in ("0:1", "a", "1.5", "0.1:0.9:0"):
    with pytest.raises(errors.UsageError, match="--ratios"):
      train.parse_args(["--dataset", "digits", "--ratios", bad])
  # The commands that read collections take the same grammar.
  assert selection.parse_ratios("0.1:0.3:0.1,0.7") == [0.1, 0.2, 0.3, 0.7]


def test_bad_flags_are_one_error_line():
  out = _cli("--dataset", "mnist", "--ratios", "2")
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      "error: --ratios: ratio must be in (0, 1], got '2'"]
  out = _cli("--dataset", "mnist", "--num_runs", "2", "--runs_per_ratio", "3")
  assert out.returncode == 2 and out.stderr.startswith("error: argument")
  with pytest.raises(errors.UsageError, match="gives 2 counts for 3 ratios"):
    train.parse_args(["--dataset", "mnist", "--ratios", "0.1,0.2,0.3",
                      "--runs_per_ratio", "2,3"])


def test_training_flags_are_shared_with_quality_and_checked():
  from heldout_tf.cli import quality  # pylint: disable=g-import-not-at-top
  flags = ["--model", "mlp", "--recipe", "mnist-mlp", "--seed", "2",
           "--epochs", "3", "--noise", "label:0.1", "--noise",
           "label_pair:0.05", "--ssft_epochs", "2", "--trajectory_runs", "1",
           "--train_size", "300", "--test_size", "50", "--group_size", "4"]
  made = train.parse_args(["--dataset", "digits", "--signals"] + flags)
  _, scored = quality.parse_args(["--dataset", "digits", "--num_runs", "8"]
                                 + flags)
  for name in quality.TRAINING_FLAGS:
    if name not in ("data_dir", "download"):
      assert getattr(made, name) == getattr(scored, name), name
  assert made.noise == "label:0.1,label_pair:0.05" and made.ssft_epochs == 2
  assert (made.train_size, made.test_size) == (300, 50)
  for argv, message in [
      (["--ssft_epochs", "2"], "--ssft_epochs needs --signals"),
      (["--trajectory_runs", "-2"], r"--trajectory_runs must be -1 \(all\)"),
      (["--train_size", "1"], r"--train_size must be 0 \(all\) or >= 2")]:
    with pytest.raises(errors.UsageError, match=message):
      train.parse_args(["--dataset", "digits"] + argv)
  # Without --num_runs, quality refuses training flags (it would only
  # score).
  with pytest.raises(errors.UsageError, match="--ssft_epochs, --engine"):
    quality.parse_args(["--ssft_epochs", "1", "--engine", "ray"])


def test_bad_data_and_model_are_one_error_line(tmp_path):
  bad = str(tmp_path / "bad.npz")
  np.savez(bad, x_train=np.zeros((4, 8, 8), np.float32),
           y_train=np.zeros(4, np.int64), x_test=np.zeros((2, 8, 8), np.uint8),
           y_test=np.zeros(2, np.int64))
  out = _cli("--dataset", "npz:" + bad, "--root", str(tmp_path / "r"))
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1] == (
      f"error: {bad}: key 'x_train' must be uint8 images (0..255), got "
      "float32")
  data = _npz(tmp_path / "ok.npz")
  out = _cli("--dataset", "npz:" + data, "--model", "nowhere.mod:build",
             "--recipe", "mnist-mlp", "--root", str(tmp_path / "r"))
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith(
      "error: --model nowhere.mod:build: cannot import module")


def test_inputs_are_checked_before_tensorflow_loads(tmp_path,
                                                   imports_tensorflow):
  # Bad paths, an unknown or renamed model, a user module without a
  # recipe: one line, before TensorFlow (seconds) and before any output.
  data = _npz(tmp_path / "ok.npz")
  (tmp_path / "file").write_text("")
  for argv, message in [
      (["--dataset", f"npz:{tmp_path}/missing.npz"], "missing.npz: no such "
       "file"),
      (["--dataset", f"npz:{data}", "--root", f"{tmp_path}/file/r"],
       "is not a directory"),
      (["--dataset", f"npz:{data}", "--model", "inception"],
       "this model is called 'small_inception'"),
      (["--dataset", f"npz:{data}", "--model", "my_nets:build"],
       "your own module: pass --recipe, one of mnist-mlp: 10 epochs"),
  ]:
    with pytest.raises(errors.HeldoutError, match=message):
      train.parse_args(argv)
  assert not imports_tensorflow(
      "from heldout_tf.cli import train\n"
      "try:\n"
      f"  train.parse_args(['--dataset', 'npz:{tmp_path}/missing.npz'])\n"
      "except Exception:\n"
      "  pass\n"
      "try:\n"
      "  train.parse_args(['--dataset', 'digits', '--model', 'm:build'])\n"
      "except Exception:\n"
      "  pass")
  out = _cli("--dataset", f"npz:{tmp_path}/missing.npz", "--root",
             str(tmp_path / "r"))
  assert out.returncode == 1 and out.stdout == ""
  assert out.stderr.strip().splitlines() == [
      f"error: --dataset npz:{tmp_path}/missing.npz: no such file"]


def test_reading_commands_check_paths_before_tensorflow(tmp_path,
                                                       imports_tensorflow):
  nope = str(tmp_path / "nope")
  code = (
      "from heldout_tf import cli\n"
      "from heldout_tf.cli import evaluate, export, quality, report\n"
      "from heldout_tf.core import errors\n"
      "for main, argv in [\n"
      f"    (evaluate.main, ['--root', {nope!r}, '--experiment', 'e']),\n"
      f"    (report.main, ['--root', {nope!r}, '--out', 'r.html']),\n"
      f"    (quality.main, ['--root', {nope!r}]),\n"
      f"    (export.main, ['--run_dir', {nope!r}, '--format', 'npz', "
      "'--out', 'x.npz'])]:\n"
      "  try:\n"
      "    main(argv)\n"
      "    raise SystemExit('not refused: %s' % argv)\n"
      "  except errors.HeldoutError as e:\n"
      "    assert 'nope: no such' in str(e) or 'nope does not exist' in "
      "str(e), e\n"
      # Released runs not there: the download instructions, at once.
      f"assert evaluate.main(['--root', {nope!r}]) == 2\n")
  assert not imports_tensorflow(code)


def test_the_recipe_in_use_is_printed_with_its_sources(tmp_path):
  data = _npz(tmp_path / "d.npz")
  said = []
  workflow.make(_options(data, tmp_path / "r", epochs=1, num_runs=2,
                         recipe="mnist-mlp"), say=said.append)
  text = "\n".join(said)
  assert "Recipe mnist-mlp (written for mlp):" in text
  assert "ours: changed from 10: epochs 1" in text
  assert ("paper: memorization paper's MNIST setup (DESIGN.md): learning_rate "
          "0.1, momentum 0.9") in text
  assert "kit default: schedule constant" in text


def test_many_ratios_resume_and_cscores(tmp_path):
  data = _npz(tmp_path / "three.npz")
  root = tmp_path / "cscores"
  options = _options(data, root, ratios="0.25,0.75", runs_per_ratio="3,2",
                     precision="float32", epochs=6)
  reports = workflow.make(options, say=lambda *_: None)
  assert [(r["ratio"], r["trained"]) for r in reports] == [(0.25, 3),
                                                           (0.75, 2)]
  assert all(r["test_accuracy"] > 0.5 for r in reports)  # It learns.
  found = layout.list_runs(str(root), "three-mlp")
  assert [(p.ratio, p.run) for p in found] == [
      (0.25, 0), (0.25, 1), (0.25, 2), (0.75, 0), (0.75, 1)]
  assert not any(os.path.exists(os.path.join(p.path, "partial"))
                 for p in found)
  loaded = estimates.load_runs(str(root), "three-mlp", progress=False)
  ratios, by_ratio = estimates.cscores_by_ratio(
      loaded.mask, loaded.correct_train, loaded.ratios)
  np.testing.assert_array_equal(ratios, [0.25, 0.75])
  for k, ratio in enumerate(ratios):  # Held-out accuracy, from the files.
    auxes = [runs_lib.read_aux(p.path) for p in found if p.ratio == ratio]
    held_out = np.zeros(40)
    count = np.zeros(40)
    for aux in auxes:
      held_out[aux["index_removed"]] += aux["correctness_removed"]
      count[aux["index_removed"]] += 1
    with np.errstate(invalid="ignore"):
      np.testing.assert_allclose(by_ratio[k], held_out / count)
  scores = estimates.multi_ratio_cscores(loaded.mask, loaded.correct_train,
                                         loaded.ratios)
  assert scores.shape == (40,)
  # The report finds the collection's images through its recorded source.
  summary = report.write(str(root), "three-mlp", str(tmp_path / "r.html"),
                         ratio=0.25, progress=False)
  assert summary.images, summary.images_note
  assert (summary.n_train, summary.n_test, summary.num_runs) == (40, 16, 3)
  # Again: nothing left to train. Other settings: refused.
  again = workflow.make(options, say=lambda *_: None)
  assert [r["trained"] for r in again] == [0, 0]
  with pytest.raises(errors.ConfigError, match="epochs"):
    workflow.make(_options(data, root, ratios="0.25", epochs=2,
                               precision="float32"),
                      say=lambda *_: None)


@pytest.mark.parametrize("trainer", ["group", "stacked"])
def test_every_run_records_the_margins_its_checkpoint_gives(tmp_path,
                                                            trainer):
  # pylint: disable=g-import-not-at-top
  from heldout_tf import models
  from heldout_tf.collection import margins as margins_lib
  from heldout_tf.collection import reevaluation
  from heldout_tf.data import pipelines
  from heldout_tf.data import sources
  from heldout_tf.training import recipes
  # pylint: enable=g-import-not-at-top
  data = _npz(tmp_path / "d.npz")
  root = tmp_path / "runs"
  options = _options(data, root, num_runs=3, group_size=2, epochs=2,
                     trainer=trainer, precision="float32")
  assert workflow.make(options, say=lambda *_: None)[0]["trained"] == 3
  store_path = layout.ratio_dir(str(root), "d-mlp", 0.7)
  with open(os.path.join(store_path, "config.json")) as f:
    config = json.load(f)
  assert config.get("trainer", "group") == trainer
  # `heldout evaluate --split both --record margins`, on the collection's
  # own model: restore each run's checkpoint, evaluate both splits, make
  # the margins file's arrays from those logits.
  loaded = sources.load("npz:" + data)
  model = models.build_model(models.recorded_model(config["model"]),
                       loaded.num_classes)
  models.ensure_built(model, shape=loaded.image_shape)
  dataset = pipelines.in_memory_dataset(loaded.name, loaded.images,
                                        loaded.labels)
  runs = [p.path for p in layout.list_runs(str(root), "d-mlp")]
  evaluated = list(reevaluation.evaluate_runs(
      types.SimpleNamespace(arch="mlp", num_classes=loaded.num_classes),
      runs, dataset, "both", progress=False, model=model,
      batch_size=recipes.from_config(config["recipe"]).eval_batch_size))
  assert len(evaluated) == 2 * len(runs)
  for train_split, test_split in zip(evaluated[::2], evaluated[1::2]):
    assert train_split.check.ok and test_split.check.ok
    recomputed = margins_lib.arrays_for(
        runs_lib.read_aux(train_split.path),
        train_logits=train_split.result.logits,
        train_labels=train_split.result.labels,
        train_index=train_split.result.index,
        test_logits=test_split.result.logits,
        test_labels=test_split.result.labels,
        test_index=test_split.result.index)
    recorded = margins_lib.read(train_split.path)
    assert sorted(recorded) == sorted(recomputed)
    for key, value in recorded.items():  # Bit for bit.
      assert value.dtype == recomputed[key].dtype, key
      assert value.tobytes() == recomputed[key].tobytes(), key
  # A collection recorded before margins existed resumes without
  # retraining a run (and its new runs get margins).
  for path in runs:
    os.remove(margins_lib.margins_path(path))
  more = workflow.make(_options(data, root, num_runs=4, group_size=2,
                                epochs=2, trainer=trainer,
                                precision="float32"), say=lambda *_: None)
  assert (more[0]["trained"], more[0]["skipped"]) == (1, 3)
  assert [os.path.isfile(margins_lib.margins_path(p.path)) for p in
          layout.list_runs(str(root), "d-mlp")] == [False] * 3 + [True]


def test_user_module_from_the_command_line(tmp_path):
  (tmp_path / "user_nets.py").write_text(
      "import sonnet as snt\n"
      "class Linear(snt.Module):\n"
      "  def __init__(self, num_classes):\n"
      "    super().__init__()\n"
      "    self.head = snt.Linear(num_classes)\n"
      "  def __call__(self, images, is_training=False):\n"
      "    return self.head(snt.flatten(images))\n"
      "def build(num_classes):\n"
      "  return Linear(num_classes)\n")
  data = _npz(tmp_path / "d.npz")
  env = dict(os.environ, PYTHONPATH=f"{ROOT_DIR}:{tmp_path}")
  out = subprocess.run(
      [sys.executable, "-m", "heldout_tf.cli.train", "--dataset", "npz:" + data,
       "--model", "user_nets:build", "--recipe", "mnist-mlp", "--epochs", "1",
       "--num_runs", "1", "--root", str(tmp_path / "r"), "--noprogress"],
      capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr
  assert "collection d-build " in out.stdout
  assert os.path.exists(tmp_path / "r" / "d-build" / "0.7" / "0" /
                        "aux_arrays.npz")


@pytest.mark.slow
def test_ray_writes_what_local_writes(tmp_path):
  import ray  # pylint: disable=g-import-not-at-top
  data = _npz(tmp_path / "d.npz")
  local = workflow.make(_options(data, tmp_path / "local", num_runs=2),
                            say=lambda *_: None)
  ray.init(num_cpus=2, include_dashboard=False, address="local",
           configure_logging=False,
           runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3",
                                     "PYTHONPATH": ROOT_DIR}})
  try:
    remote = workflow.make(
        _options(data, tmp_path / "ray", num_runs=2, engine="ray"),
        say=lambda *_: None)
  finally:
    ray.shutdown()
  assert remote[0]["trained"] == 2 and remote[0]["engine"] == "ray"
  assert local[0]["precision"] == remote[0]["precision"]
  for run in range(2):
    rel = os.path.join("d-mlp", "0.7", str(run))
    for name in ("aux_arrays.npz", "checkpoints/ckpt-1.index",
                 "checkpoints/ckpt-1.data-00000-of-00001"):
      a = (tmp_path / "local" / rel / name).read_bytes()
      b = (tmp_path / "ray" / rel / name).read_bytes()
      assert a == b, (run, name)


@pytest.mark.slow
def test_small_inception_collection_evaluates_with_demo(tmp_path, cifar10):
  data_dir, _ = cifar10
  root = tmp_path / "runs"
  reports = workflow.make(train.parse_args(
      ["--dataset", "cifar10", "--data_dir", data_dir, "--model",
       "small_inception", "--epochs", "1", "--batch_size", "16",
       "--num_runs", "1", "--root", str(root), "--noprogress"]),
                              say=lambda *_: None)
  assert reports[0]["experiment"] == "cifar10-small_inception"
  env = dict(os.environ, PYTHONPATH=ROOT_DIR)
  out = subprocess.run(
      [sys.executable, "demo.py", "--experiment", "cifar10-small_inception",
       "--root", str(root), "--data_dir", data_dir, "--require_match"],
      capture_output=True, text=True, env=env, cwd=ROOT_DIR, timeout=300)
  assert out.returncode == 0, out.stderr
  assert "32 out of 32 predictions match" in out.stdout


# ------------------------------------------ what a collection records --

USER_NETS = """
import sonnet as snt
HIDDEN = 16
class Net(snt.Module):
  def __init__(self, num_classes, extra=0):
    super().__init__()
    self.hidden = snt.Linear(HIDDEN)
    self.head = snt.Linear(num_classes + extra)
  def __call__(self, images, is_training=False):
    return self.head(self.hidden(snt.flatten(images)))
def build(num_classes):
  return Net(num_classes)
def wrong(num_classes):
  return Net(num_classes, extra=1)
"""


@pytest.fixture
def user_nets(tmp_path, monkeypatch):
  """The module `user_nets` (functions `build`, and `wrong`: logits of one
  class too many), importable; its width is `user_nets.HIDDEN`."""
  (tmp_path / "user_nets.py").write_text(USER_NETS)
  monkeypatch.syspath_prepend(str(tmp_path))
  sys.modules.pop("user_nets", None)
  import user_nets  # pylint: disable=g-import-not-at-top
  yield user_nets
  sys.modules.pop("user_nets", None)


def _config(root, experiment):
  with open(os.path.join(root, experiment, "0.7", "config.json")) as f:
    return f.read()


def test_a_model_edited_between_calls_is_refused_naming_its_variables(
    tmp_path, user_nets, monkeypatch):
  data = _npz(tmp_path / "d.npz")
  root = tmp_path / "r"

  def make(num_runs):
    return workflow.make(_options(data, root, model="user_nets:build",
                                  num_runs=num_runs, precision="float32"),
                         say=lambda *_: None)

  make(1)
  recorded = json.loads(_config(root, "d-build"))
  assert recorded["model_variables"] == {
      "head/b": "3", "head/w": "16x3", "hidden/b": "16", "hidden/w": "64x16"}
  monkeypatch.setattr(user_nets, "HIDDEN", 32)  # The module was edited.
  with pytest.raises(errors.ConfigError) as info:
    make(2)
  assert ("model_variables.head/w: on disk '16x3', now '32x3'"
          in str(info.value))
  assert "model_variables.hidden/w: on disk '64x16', now '64x32'" in str(
      info.value)
  store = collection.Store(str(root), "d-build", 0.7)
  assert store.finished_runs() == [0]
  # A collection recorded before the key existed keeps resuming, and
  # nothing is added to its config.
  monkeypatch.setattr(user_nets, "HIDDEN", 16)
  del recorded["model_variables"]
  with open(store.config_path, "w") as f:
    json.dump(recorded, f)
  before = _config(root, "d-build")
  assert [r["trained"] for r in make(2)] == [1]
  assert _config(root, "d-build") == before
  # Recorded variables are checked on read like every other key.
  recorded["model_variables"] = {"head/w": [16, 3]}
  with open(store.config_path, "w") as f:
    json.dump(recorded, f)
  with pytest.raises(errors.ConfigError, match="key 'model_variables'"):
    make(2)


def test_a_call_refused_by_its_checks_leaves_nothing_that_blocks_the_next(
    tmp_path, user_nets):
  del user_nets
  data = _npz(tmp_path / "d.npz")
  root = tmp_path / "r"
  for model, message in (("user_nets:wrong", "expected logits"),
                         (":build", "--model")):
    with pytest.raises(errors.UsageError, match=message):
      workflow.make(_options(data, root, model=model, experiment="e",
                             precision="float32"), say=lambda *_: None)
    assert not os.path.exists(root / "e" / "0.7" / "config.json")
  reports = workflow.make(_options(data, root, model="user_nets:build",
                                   experiment="e", precision="float32"),
                          say=lambda *_: None)
  assert reports[0]["trained"] == 8


def test_the_same_npz_bytes_at_another_path_resume(tmp_path):
  for where in ("a", "b", "c"):
    (tmp_path / where).mkdir()
  first = _npz(tmp_path / "a" / "data.npz")
  moved = str(tmp_path / "b" / "data.npz")
  renamed = str(tmp_path / "c" / "renamed.npz")
  for copy in (moved, renamed):
    with open(first, "rb") as src, open(copy, "wb") as dst:
      dst.write(src.read())
  root = tmp_path / "r"

  def make(data, num_runs):
    return workflow.make(_options(data, root, num_runs=num_runs,
                                  experiment="e", precision="float32"),
                         say=lambda *_: None)

  make(first, 1)
  assert [r["trained"] for r in make(moved, 2)] == [1]
  assert [r["trained"] for r in make(renamed, 3)] == [1]
  recorded = json.loads(_config(root, "e"))
  assert recorded["source"] == "npz:" + first  # Information, kept.
  assert recorded["dataset"] == "data"
  _npz(moved, seed=1)  # Other bytes at that path: refused.
  with pytest.raises(errors.ConfigError, match="data_fingerprint: on disk"):
    make(moved, 4)


def test_an_npz_source_without_a_file_names_the_flag():
  for text in ("npz:", "npz: "):
    with pytest.raises(errors.UsageError) as info:
      train.parse_args(["--dataset", text])
    assert str(info.value) == (
        f"--dataset {text!r} names no file: expected npz:FILE, a .npz file "
        "holding x_train, y_train, x_test and y_test")
  out = _cli("--dataset", "npz:")
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      "error: --dataset 'npz:' names no file: expected npz:FILE, a .npz "
      "file holding x_train, y_train, x_test and y_test"]


def test_a_collection_keeps_the_evaluation_batch_it_recorded(tmp_path):
  data = _npz(tmp_path / "d.npz")
  root = tmp_path / "r"
  first = workflow.make(_options(data, root, recipe="mnist-mlp",
                                 num_runs=1, precision="float32"),
                        say=lambda *_: None)
  path = os.path.join(first[0]["path"], "config.json")
  with open(path) as f:
    config = json.load(f)
  assert config["recipe"]["eval_batch_size"] == recipes.get(
      "mnist-mlp").eval_batch_size != 200  # The recipe's now.
  # A collection made when the recipe evaluated in batches of 200.
  config["recipe"]["eval_batch_size"] = 200
  with open(path, "w") as f:
    json.dump(config, f)
  reports = workflow.make(_options(data, root, recipe="mnist-mlp",
                                   num_runs=2, precision="float32"),
                          say=lambda *_: None)
  assert reports[0]["trained"] == 1
  with open(path) as f:
    assert json.load(f)["recipe"]["eval_batch_size"] == 200
  # Any other recipe setting still has to match.
  with pytest.raises(errors.ConfigError, match="recipe.epochs"):
    workflow.make(_options(data, root, recipe="mnist-mlp", num_runs=3,
                           epochs=2, precision="float32"),
                  say=lambda *_: None)
