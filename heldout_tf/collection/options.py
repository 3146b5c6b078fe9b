"""The options every collection shares, declared once.

`RunSettings` holds the hyper-parameters every run of a collection shares
(the one declaration: `heldout_tf.training.ensemble.TrainConfig` extends it, and so
does `Options`); `Options` adds how the collection is made (where, how many
runs, blocks, precision, shard, engine, progress). A pipeline extends
`Options` with its own fields and flags:

  @dataclasses.dataclass(frozen=True)
  class MyOptions(collection.Options):
    root: str = "./my_runs"          # a field redeclared: another default
    noise: str = "label:0.1"

    def check(self):
      super().check()
      ...                            # the pipeline's own flags

  parser = cli.Parser("python -m my_pipeline", __doc__)
  options.add_flags(parser, MyOptions())   # --root, --num_runs, ...
  parser.add_argument("--noise", ...)
  opts = options.from_args(MyOptions, parser.parse_args(argv))  # checked

Every field is a flag of the same name (`--num_runs`, `--save_checkpoints/
--nosave_checkpoints`, ...); `check` raises `errors.UsageError` naming the
flag (`--epochs must be >= 1, got 0`). No TensorFlow is imported.
"""

import argparse
import dataclasses
import math
from typing import Optional, Type, TypeVar

from heldout_tf import cli
from heldout_tf.core import errors
from heldout_tf.core import hardware
from heldout_tf.collection import blocks

T = TypeVar("T", bound="Options")


def need(ok: bool, flag: str, rule: str, value):
  """`errors.UsageError("--flag rule, got value")` unless `ok`."""
  if not ok:
    raise errors.UsageError(f"--{flag} {rule}, got {value!r}")


def is_number(value) -> bool:
  """A finite int or float (not a bool)."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """Hyper-parameters every run of a collection shares (MNIST reference)."""
  ratio: float = 0.7  # Fraction of the training set each run trains on.
  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 0.1
  seed: int = 0  # Subsets, shuffles and inits are functions of (seed, run).

  def check(self):
    """Raises `errors.UsageError` naming the first bad value's flag."""
    need(is_number(self.ratio) and 0.0 < self.ratio <= 1.0, "ratio",
         "must be in (0, 1]", self.ratio)
    need(self.epochs >= 1, "epochs", "must be >= 1", self.epochs)
    need(self.batch_size >= 1, "batch_size", "must be >= 1",
         self.batch_size)
    need(is_number(self.learning_rate) and self.learning_rate > 0,
         "learning_rate", "must be a finite number > 0", self.learning_rate)
    need(self.seed >= 0, "seed", "must be >= 0", self.seed)


@dataclasses.dataclass(frozen=True)
class Options(RunSettings):
  """What making one collection needs besides its pipeline's own flags."""
  root: str = "./heldout_runs"  # <root>/<experiment>/<ratio>/<run>/
  num_runs: int = 512
  group_size: int = 0  # 0: the recorded one, else chosen from memory.
  precision: str = "auto"  # 'auto': the recorded one, else detected.
  shard: str = blocks.NO_SHARD  # 'i/n': the i-th of n sets of whole blocks.
  save_checkpoints: bool = True
  engine: str = "local"  # 'local' or 'ray'.
  ray_address: Optional[str] = None  # None: a Ray instance on this machine.
  progress: bool = True

  def check(self):
    super().check()
    need(self.num_runs >= 1, "num_runs", "must be >= 1", self.num_runs)
    need(self.group_size >= 0, "group_size",
         "must be >= 1, or 0 for the recorded one", self.group_size)
    need(self.precision in hardware.CHOICES, "precision",
         f"must be one of {hardware.CHOICES}", self.precision)
    need(self.engine in cli.ENGINES, "engine",
         f"must be one of {cli.ENGINES}", self.engine)
    need(self.ray_address is None or self.engine == "ray", "ray_address",
         "needs --engine ray", self.ray_address)
    blocks.parse_shard(self.shard)


_HELP = {
    "ratio": "Fraction of the training set each run trains on.",
    "epochs": "Training epochs per run.",
    "batch_size": "Batch size.",
    "learning_rate": "SGD learning rate (momentum 0.9).",
    "seed": "Seed: subsets, shuffles, initialisation (and noise) are "
            "functions of (seed, run).",
    "root": None,  # cli.add_root's text.
    "num_runs": "Number of runs (models) in the collection.",
    "group_size": "Models trained at once (canonical blocks of runs, "
                  "recorded in config.json); 0: the recorded one, else "
                  "chosen from the available memory.",
    "precision": "Matmul precision; 'auto': the recorded one, else bfloat16 "
                 "where the hardware has fast bfloat16 units.",
    "shard": "i/n: train only the i-th of n disjoint sets of whole blocks "
             "of runs.",
    "save_checkpoints": "Write each run's checkpoints/ckpt-<N> "
                        "(--nosave_checkpoints: aux arrays only).",
}


def add_flags(parser: argparse.ArgumentParser, defaults: Options,
              what: str = "the runs", sharding: bool = True):
  """Adds a flag for every field of `Options` (defaults from `defaults`);
  without `sharding`, no --shard (the pipeline makes whole collections)."""
  for field in dataclasses.fields(RunSettings):
    parser.add_argument(f"--{field.name}", type=type(field.default),
                        default=getattr(defaults, field.name),
                        help=_HELP[field.name])
  cli.add_root(parser, default=defaults.root)
  parser.add_argument("--num_runs", type=int, default=defaults.num_runs,
                      help=_HELP["num_runs"])
  parser.add_argument("--group_size", type=int, default=defaults.group_size,
                      help=_HELP["group_size"])
  parser.add_argument("--precision", choices=hardware.CHOICES,
                      default=defaults.precision, help=_HELP["precision"])
  if sharding:
    parser.add_argument("--shard", default=defaults.shard, metavar="I/N",
                        help=_HELP["shard"])
  cli.add_bool(parser, "save_checkpoints", defaults.save_checkpoints,
               _HELP["save_checkpoints"])
  cli.add_engine(parser, what)
  cli.add_progress(parser)


def from_args(cls: Type[T], args: argparse.Namespace, **overrides) -> T:
  """`cls` from parsed flags (fields missing from `args` keep their
  defaults), checked (`cls.check`)."""
  values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if hasattr(args, f.name)}
  values.update(overrides)
  options = cls(**values)
  options.check()
  return options
