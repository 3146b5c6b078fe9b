"""The package's front door: lazy imports, one error base."""

import importlib
import inspect
import pkgutil

import heldout_tf
from heldout_tf import errors


def test_download_path_does_not_import_tensorflow(imports_tensorflow):
  assert not imports_tensorflow(
      "import heldout_tf, heldout_tf.archive, heldout_tf.download, "
      "heldout_tf.layout, heldout_tf.released, heldout_tf.sizes")


def test_models_do_import_tensorflow_on_access(imports_tensorflow):
  # The check above can fail: touching a TF module does load TensorFlow.
  assert imports_tensorflow("import heldout_tf; heldout_tf.models")


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


def test_every_module_is_listed_or_a_command():
  # The module list cannot drift: a new library module goes in __all__ (and
  # the package docstring), a new command in heldout_tf.commands.
  from heldout_tf import commands  # pylint: disable=g-import-not-at-top
  command_modules = {module for module, _ in commands.COMMANDS.values()}
  unlisted = []
  for info in pkgutil.iter_modules(heldout_tf.__path__):
    name = f"heldout_tf.{info.name}"
    if (info.name not in heldout_tf.__all__ and name not in command_modules
        and info.name != "commands"):
      unlisted.append(name)
  assert not unlisted, unlisted
  for name in heldout_tf.__all__[1:]:
    assert f"`{name}`" in heldout_tf.__doc__, name
