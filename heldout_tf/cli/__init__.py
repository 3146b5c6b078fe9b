"""The commands: `heldout <command>` (`commands`, the entry point) and one
module per command: `download`, `evaluate`, `estimate`, `datamodels`,
`lds`, `export`, `train`, `quality`, `report`; `python -m
heldout_tf.cli.<command>` is the same.

This package's own names are what every command shares: one style for all.

  def parse_args(argv):
    parser = cli.Parser("heldout estimate", __doc__)   # argparse, kit style
    parser.add_argument("--out", ...)                  # --out: a file
    cli.add_root(parser)                               # --root: a collection
    cli.add_progress(parser)                           # --progress/--noprogress
    return parser.parse_args(argv)

  def main(argv=None):
    args = parse_args(argv)     # --help and bad flags never import TensorFlow
    cli.quiet_tensorflow()      # then TensorFlow, without its start-up lines
    ...                         # call one library function, print
  if __name__ == "__main__":
    cli.run(main)

Exit codes: 0 done; 2 a bad flag (`error: --flag ...`, from the parser or
an `errors.UsageError` raised later); 1 any other bad input (an
`errors.HeldoutError`: `error: <message>`); 130 Ctrl-C. Every other
exception keeps its traceback: those are bugs.

Flag names mean one thing in every command: `--root` is the directory
holding a collection (`<root>/<experiment>/<ratio>/<run>/`), `--out` is a
file (or, for commands writing several, a directory) the command writes,
`--experiment` one directory name under it (`add_experiment`),
`--progress/--noprogress` the progress bar, `--engine local|ray` with
`--ray_address` where work can go to Ray.
"""

import argparse
import difflib
import importlib
import sys
from typing import Callable, Optional, Sequence

from heldout_tf.collection import engine as engine_lib
from heldout_tf.collection import layout
from heldout_tf.core import errors
from heldout_tf.core import startup
from heldout_tf.core.startup import quiet_tensorflow  # noqa: F401  (re-exported)


USAGE_EXIT = 2  # A bad flag, whoever finds it.
ERROR_EXIT = 1  # Any other bad input.
ENGINES = engine_lib.ENGINES


def fail(message: str, code: int = ERROR_EXIT):
  """Prints `error: message` to stderr and exits with `code`."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter,
                     argparse.ArgumentDefaultsHelpFormatter):
  """Keeps the description's layout and shows every default."""


class Parser(argparse.ArgumentParser):
  """argparse in the kit's style: defaults in --help, and a bad flag is one
  `error: ...` line with exit code 2 (no usage dump)."""

  def __init__(self, prog: str, doc: str = "", **kwargs):
    kwargs.setdefault("formatter_class", _HelpFormatter)
    super().__init__(prog=prog, description=doc, allow_abbrev=False,
                     **kwargs)

  def error(self, message):
    fail(message + self._did_you_mean(message), USAGE_EXIT)

  def _did_you_mean(self, message: str) -> str:
    """' (did you mean --x?)' for an unrecognized flag close to one of
    this command's (e.g. --ratio for --ratios), else ''."""
    if not message.startswith("unrecognized arguments:"):
      return ""
    known = [s for a in self._actions for s in a.option_strings
             if s.startswith("--")]
    for given in message.split(":", 1)[1].split():
      name = given.split("=", 1)[0]
      if name.startswith("--"):
        close = ([k for k in known if k.startswith(name + "_")] or
                 difflib.get_close_matches(name, known, n=1, cutoff=0.75))
        if close:
          return f" (did you mean {close[0]}?)"
    return ""


def add_bool(parser: argparse.ArgumentParser, name: str, default: bool,
             help: str):  # pylint: disable=redefined-builtin
  """`--name` / `--noname` (and `--no-name`), default `default`."""
  group = parser.add_mutually_exclusive_group()
  group.add_argument(f"--{name}", dest=name, action="store_true", help=help)
  group.add_argument(f"--no{name}", f"--no-{name}", dest=name,
                     action="store_false", help=argparse.SUPPRESS)
  parser.set_defaults(**{name: default})


def add_progress(parser: argparse.ArgumentParser):
  """`--progress/--noprogress`: the one progress flag."""
  add_bool(parser, "progress", True, "Show progress (a bar on a terminal, "
           "occasional lines otherwise); --noprogress hides it.")


def add_root(parser: argparse.ArgumentParser, *, required: bool = False,
             default: Optional[str] = None, help: Optional[str] = None
             ):  # pylint: disable=redefined-builtin
  """`--root`: the directory holding `<experiment>/<ratio>/<run>/`."""
  parser.add_argument(
      "--root", required=required, default=default, metavar="DIR",
      help=help or "The collection's root directory, holding "
      "<experiment>/<ratio>/<run>/.")


def _experiment(text: str) -> str:
  """`--experiment`'s type: '' (the command's default) or a name by
  `layout.experiment_name` (argparse shows the message as is)."""
  try:
    return layout.experiment_name(text) if text else text
  except errors.UsageError as e:
    raise argparse.ArgumentTypeError(str(e).split(" ", 1)[1]) from None


def add_experiment(parser: argparse.ArgumentParser, *,
                   required: bool = False, default: Optional[str] = "",
                   help: str = "The experiment: one directory under --root, "
                   "e.g. mnist-mlp."):  # pylint: disable=redefined-builtin
  """`--experiment NAME`: one directory name under --root, checked by the
  one rule (`layout.experiment_name`: no '/', '..' or absolute path)."""
  parser.add_argument("--experiment", required=required, default=default,
                      metavar="NAME", type=_experiment, help=help)


def check_root(root: str, flag: str = "--root"):
  """`errors.PathError` unless `root` is an existing directory: a command
  that reads a collection says so at once, before TensorFlow loads."""
  import os  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(root):
    what = "not a directory" if os.path.exists(root) else "no such directory"
    raise errors.PathError(f"{flag} {root}: {what}")


def add_recorded_sources(parser: argparse.ArgumentParser, *,
                         dataset: bool = True):
  """`--model` (and with `dataset`, `--dataset`): a `heldout train`
  collection's recorded user module named again on this command line (no
  code is imported because a file names it: `models.recorded_model`), and
  its data from elsewhere than recorded (its fingerprint must match)."""
  parser.add_argument("--model", default="", metavar="MODULE:FUNCTION",
                      help="A heldout train collection whose config.json "
                      "records a user module: name it again to import it "
                      "(no code is imported because a file names it).")
  if dataset:
    parser.add_argument("--dataset", default="", metavar="SOURCE",
                        help="A heldout train collection's data from "
                        "elsewhere than recorded (e.g. npz:FILE moved); its "
                        "fingerprint must match.")


def add_engine(parser: argparse.ArgumentParser, what: str = "the work"):
  """`--engine local|ray` and `--ray_address`."""
  parser.add_argument(
      "--engine", choices=ENGINES, default="local",
      help=f"'ray': run {what} as Ray tasks (identical results; --root must "
      "be storage every node sees).")
  parser.add_argument(
      "--ray_address", default=None, metavar="HOST:PORT",
      help="--engine ray: the cluster to join (HEAD:6379 or 'auto'); unset: "
      "a Ray instance on this machine only.")


def check_engine(args: argparse.Namespace):
  """`--engine` / `--ray_address` by the one rule
  (`heldout_tf.collection.check_engine`)."""
  engine_lib.check_engine(args.engine, getattr(args, "ray_address", None))


def one_ratio_path(root: str, experiment: str, ratios, filename: str
                   ) -> Optional[str]:
  """The default `--out` of the attribution commands:
  `<root>/<experiment>/<ratio>/attribution/<filename>` of the one ratio
  they work on (`ratios`; None: the ratios on disk), where `heldout
  report` finds it. None when no run is on disk (the command then says
  so); `errors.UsageError` naming --out when there are several ratios."""
  from heldout_tf.collection import layout  # pylint: disable=g-import-not-at-top
  if ratios is None:
    ratios = sorted({r.ratio for r in layout.list_runs(root, experiment)})
  if not ratios:
    return None
  if len(ratios) > 1:
    shown = ", ".join(f"{r:g}" for r in ratios)
    raise errors.UsageError(f"--out: the runs are at ratios {shown}: give "
                            "--out FILE.npz, or --ratios R for one ratio")
  return layout.attribution_path(root, experiment, ratios[0], filename)


def command_module(name: str):
  """The command module `name` (`heldout_tf.cli.<command>`), imported: it
  has `build_parser()` and `main(argv)`."""
  return importlib.import_module(name)


def run(main: Callable[[Optional[Sequence[str]]], Optional[int]],
        argv: Optional[Sequence[str]] = None):
  """Calls `main(argv)` and turns kit errors into `error:` lines (exit 2
  for a bad flag, 1 for other bad input); warnings are `warning: ...`
  lines (`startup.kit_warning_format`)."""
  startup.kit_warning_format()
  try:
    code = main(argv)
  except errors.UsageError as e:
    fail(str(e), USAGE_EXIT)
  except errors.HeldoutError as e:
    fail(str(e))
  except KeyboardInterrupt:
    print("interrupted; re-run the same command to resume", file=sys.stderr)
    sys.exit(130)
  sys.exit(code or 0)
