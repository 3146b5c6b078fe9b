"""The package's front door: lazy imports, one error base."""

import importlib
import inspect
import pkgutil
import re

import heldout_tf
from heldout_tf.core import errors


def test_download_path_does_not_import_tensorflow(imports_tensorflow):
  assert not imports_tensorflow(
      "import heldout_tf, heldout_tf.archive, heldout_tf.cli.download, "
      "heldout_tf.collection.layout, heldout_tf.collection.experiments, heldout_tf.core.sizes")


def test_models_do_import_tensorflow_on_access(imports_tensorflow):
  # The check above can fail: touching a TF name does load TensorFlow.
  assert not imports_tensorflow("import heldout_tf; heldout_tf.models")
  assert imports_tensorflow("import heldout_tf; heldout_tf.models.build_model")


def test_all_names_resolve():
  for name in heldout_tf.__all__:
    assert getattr(heldout_tf, name) is not None, name


def _kit_modules():
  for info in pkgutil.walk_packages(heldout_tf.__path__, "heldout_tf."):
    try:
      yield importlib.import_module(info.name)
    except ImportError as e:  # An optional extra that is not installed.
      if "heldout_tf" in str(e):
        raise


def test_every_kit_error_derives_from_the_error_base():
  offenders = []
  for module in _kit_modules():
    for name, value in vars(module).items():
      if (inspect.isclass(value) and issubclass(value, Exception)
          and value.__module__ == module.__name__
          and not name.startswith("_")
          and not issubclass(value, errors.HeldoutError)):
        offenders.append(f"{module.__name__}.{name}")
  assert not offenders, offenders


def test_the_tree_is_the_stages_and_each_stage_lists_its_modules():
  # The tree cannot drift from the docs: every subpackage is a stage listed
  # (in order) in the package docstring, every module of a stage is named
  # in that stage's docstring, and nothing but stages sits at the top.
  top = {info.name: info.ispkg for info in pkgutil.iter_modules(
      heldout_tf.__path__)}
  assert set(top) == set(heldout_tf.STAGES), top
  assert all(top.values()), top
  starts = [line.split()[0] for line in heldout_tf.__doc__.splitlines()
            if line.startswith("  ") and not line.startswith("   ")
            and line.split()[0] in heldout_tf.STAGES]
  assert starts == list(heldout_tf.STAGES)
  for stage in heldout_tf.STAGES:
    package = importlib.import_module(f"heldout_tf.{stage}")
    for info in pkgutil.iter_modules(package.__path__):
      if info.name.startswith("_"):
        continue
      assert re.search(rf"\b{info.name}\b", package.__doc__), (
          f"heldout_tf.{stage}.{info.name} is not named in the docstring "
          f"of heldout_tf.{stage}")
