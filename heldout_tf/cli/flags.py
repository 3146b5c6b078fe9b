"""The flags that make a collection, declared once.

`heldout train`, `heldout quality` (its training flags) and the MNIST
presets (`mnist_example.train`, `mnist_example.quality`) declare them here,
with the defaults of `heldout_tf.training.workflow.Options` (a preset
passes its own), and turn parsed flags into that `Options`:

  parser = cli.Parser("heldout train", __doc__)
  flags.add_data_flags(parser, defaults)
  flags.add_training_flags(parser, defaults)
  options = flags.options_from(args)      # a checked workflow.Options

A flag means one thing in every command: `--dataset mnist` is tfds MNIST
when prepared, else the embedded digits (said in one line); `--epochs 0`
(and `--batch_size 0`, `--learning_rate 0`) keep the recipe's;
`--group_size 0` is the recorded group size, else the trainer's default;
`--ratios` takes `0.7`, `0.1,0.5` or `0.1:0.9:0.1` everywhere. No
TensorFlow is imported.
"""

import argparse
import dataclasses
import json
from typing import Optional

from heldout_tf import cli
from heldout_tf.collection import selection
from heldout_tf.core import errors
from heldout_tf.core import hardware
from heldout_tf.data import noise
from heldout_tf.training import workflow

# Every field of workflow.Options with its default: the flags' defaults.
DEFAULTS = {f.name: f.default for f in dataclasses.fields(workflow.Options)}


class _Repeated(argparse.Action):
  """A repeatable flag whose given values replace its default (argparse's
  'append' would add them to it)."""

  def __call__(self, parser, namespace, values, option_string=None):
    given = getattr(namespace, self.dest)
    given = [] if given is self.default else list(given)
    setattr(namespace, self.dest, given + [values])


def add_data_flags(parser, defaults: Optional[dict] = None):
  """--dataset, --data_dir, --download, --noise, --train_size, --test_size
  (`defaults` replace some of `DEFAULTS`)."""
  d = dict(DEFAULTS, **(defaults or {}))
  parser.add_argument(
      "--dataset", default=d["dataset"],
      help="A tfds name (cifar10, cifar100:3.0.2, mnist:3.0.1, ...), "
      "npz:FILE, mnist (tfds MNIST when prepared in --data_dir, else the "
      "embedded offline digits, said in one line) or digits.")
  parser.add_argument("--data_dir", default=d["data_dir"], metavar="DIR",
                      help="The tfds data directory.")
  cli.add_bool(parser, "download", d["download"],
               "Let tfds download the dataset (network).")
  parser.add_argument(
      "--noise", action=_Repeated, default=d["noise"],
      metavar="KIND:FRACTION",
      help="Known noise on the training set, seeded by --seed and "
      "recorded: kind:fraction[@intensity], kinds "
      f"{', '.join(noise.KINDS)}; repeat or comma-separate to combine "
      "('label:0' for none; given values replace the default).")
  parser.add_argument("--train_size", type=int, default=d["train_size"],
                      help="Use only the first N training examples (0: "
                      "all).")
  parser.add_argument("--test_size", type=int, default=d["test_size"],
                      help="Use only the first N test examples (0: all).")


def add_training_flags(parser, defaults: Optional[dict] = None):
  """The flags that say how runs train: model, recipe and its overrides,
  seed, precision, trainer, group size, checkpoints, second split,
  trajectories (`defaults` replace some of `DEFAULTS`)."""
  d = dict(DEFAULTS, **(defaults or {}))
  parser.add_argument("--model", default=d["model"],
                      help="small_inception, resnet9, mlp, resnet50, or "
                      "module:function returning an snt.Module (the module "
                      "looked for in the current directory first, as python "
                      "-m does); empty: the recipe's.")
  parser.add_argument("--model_options", default=_json(d["model_options"]),
                      metavar="JSON",
                      help='Constructor options, e.g. \'{"width": 0.5}\' '
                      "for a narrower ResNet-9.")
  parser.add_argument("--recipe", default=d["recipe"],
                      help="mnist-mlp, released or resnet9; empty: the "
                      "model's (mlp -> mnist-mlp, small_inception -> "
                      "released, resnet9 and resnet50 -> resnet9); your own "
                      "module needs one.")
  parser.add_argument("--seed", type=int, default=d["seed"],
                      help="Subsets, shuffles, initialisation, augmentation "
                      "and noise are functions of (seed, run).")
  for flag, kind in (("epochs", int), ("batch_size", int),
                     ("learning_rate", float)):
    parser.add_argument(f"--{flag}", type=kind, default=d[flag],
                        help=f"The recipe's {flag} (0: keep the recipe's; "
                        "fewer epochs keep the schedule's shape).")
  parser.add_argument("--precision",
                      choices=hardware.TRAINING_PRECISIONS + ("auto",),
                      default=d["precision"],
                      help="Training precision ('auto': the recorded one, "
                      "else bfloat16 / float16 where the device is fast in "
                      "it). Recorded correctness is always float32.")
  parser.add_argument("--trainer", choices=workflow.TRAINERS,
                      default=d["trainer"],
                      help="'group': any model, one model at a time or G "
                      "side by side; 'stacked': MLPs with stacked weights; "
                      "'auto': the recorded one, else the faster for the "
                      "model.")
  parser.add_argument("--group_size", type=int, default=d["group_size"],
                      help="Models trained side by side (canonical blocks "
                      "of runs, recorded); 0: the recorded one, else the "
                      "trainer's default.")
  parser.add_argument("--checkpoint_every", type=int,
                      default=d["checkpoint_every"],
                      help="Epochs between a run's resume checkpoints "
                      "(0: none).")
  parser.add_argument("--ssft_epochs", type=int, default=d["ssft_epochs"],
                      help="Second-split epochs after each run, on its "
                      "held-out examples, for the second-split forgetting "
                      "signal (needs signals; 0: none).")
  parser.add_argument("--trajectory_runs", type=int,
                      default=d["trajectory_runs"],
                      help="Runs 0..K-1 keep a checkpoint of every epoch "
                      "(<run>/trajectory/; -1: all).")


def _json(pairs) -> str:
  return json.dumps(dict(pairs)) if pairs else ""


def parse_model_options(text: str) -> tuple:
  """--model_options JSON -> sorted (key, value) pairs."""
  try:
    value = json.loads(text) if text else {}
  except ValueError:
    value = None
  if not isinstance(value, dict):
    raise errors.UsageError(f"--model_options {text!r}: expected a JSON "
                            'object, e.g. \'{"width": 0.5}\'')
  return tuple(sorted(value.items()))


def parse_counts(text: str, flag: str) -> tuple:
  """'20' or '20,20,40' -> run counts."""
  try:
    return tuple(int(x) for x in text.split(","))
  except ValueError:
    raise errors.UsageError(
        f"--{flag} {text!r}: expected a count or one count per ratio "
        "(20,20,40)") from None


def options_from(args, **values) -> workflow.Options:
  """The checked `workflow.Options` of parsed flags: every field `args`
  has, then `values` (e.g. ratios, num_runs)."""
  given = {f: getattr(args, f) for f in DEFAULTS if hasattr(args, f)}
  given.update(values)
  if isinstance(given.get("model_options"), str):
    given["model_options"] = parse_model_options(given["model_options"])
  if isinstance(given.get("noise"), (list, tuple)):
    given["noise"] = ",".join(given["noise"])
  if isinstance(given.get("ratios"), str):
    given["ratios"] = tuple(selection.parse_ratios(given["ratios"]) or ())
  options = workflow.Options(**given)
  options.check()
  return options
