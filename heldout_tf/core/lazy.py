"""Front doors that import on first use: a package lists its public names
and the submodule holding each, and nothing heavy (TensorFlow) loads until
one is touched.

  # heldout_tf/models/__init__.py
  __getattr__, __dir__, __all__ = lazy.front_door(__name__, {
      "architectures": ("MLP", "ResNet9", ...),   # names from a submodule
      "checkpoints": (),                          # the submodule alone
  })

`package.MLP` imports `package.architectures` and returns its `MLP`;
`package.checkpoints` imports the submodule.
"""

import importlib
from typing import Callable, Dict, List, Sequence, Tuple


def front_door(package: str, names_of: Dict[str, Sequence[str]]
               ) -> Tuple[Callable, Callable, List[str]]:
  """`(__getattr__, __dir__, __all__)` for `package` (see the module
  docstring); every submodule of `names_of` is public too."""
  module_of = {name: module for module, names in names_of.items()
               for name in names}
  public = sorted(set(names_of) | set(module_of))
  namespace = importlib.import_module(package).__dict__

  def getattr_(name):
    if name in names_of:
      value = importlib.import_module(f"{package}.{name}")
    elif name in module_of:
      value = getattr(importlib.import_module(
          f"{package}.{module_of[name]}"), name)
    else:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    namespace[name] = value
    return value

  def dir_():
    return sorted(set(namespace) | set(public))

  return getattr_, dir_, public
