"""heldout_tf.cli and the command-line style of every command: quiet
TensorFlow start-up, error lines, `--help` without TensorFlow, `heldout`
(the dispatcher), the run-id/ratio lists and the experiment registry."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from heldout_tf import cli
from heldout_tf.cli import commands
from heldout_tf.core import errors
from heldout_tf.core import files
from heldout_tf.collection import experiments
from heldout_tf.collection import selection

_NOISE = ("oneDNN custom operations", "cuInit", "InitializeLog",
          "cpu_feature_guard", "cuda drivers")


def _stderr(code, **env):
  environ = {k: v for k, v in os.environ.items()
             if k != "TF_CPP_MIN_LOG_LEVEL"}
  environ.update(env)
  return subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, env=environ, check=True).stderr


def test_quiet_tensorflow_hides_start_up_lines_but_not_others():
  err = _stderr("from heldout_tf import cli\ncli.quiet_tensorflow()\n"
                "import sys, tensorflow as tf\n(tf.constant(1) + 1).numpy()\n"
                "print('mine', file=sys.stderr)")
  assert not [n for n in _NOISE if n in err], err
  assert "mine" in err


def test_start_up_lines_are_there_without_it():
  # The check above can fail: plain TensorFlow prints them.
  err = _stderr("import tensorflow as tf\n(tf.constant(1) + 1).numpy()")
  assert any(n in err for n in _NOISE), err


def test_run_prints_kit_errors_as_one_line(capsys):
  def main(argv):
    raise errors.UsageError("--flag: bad value")
  with pytest.raises(SystemExit) as exit_info:
    cli.run(main)
  assert exit_info.value.code == cli.USAGE_EXIT == 2  # A bad flag.
  assert capsys.readouterr().err == "error: --flag: bad value\n"

  def main2(argv):
    raise errors.PathError("cannot read x: No such file or directory")
  with pytest.raises(SystemExit) as exit_info:
    cli.run(main2)
  assert exit_info.value.code == cli.ERROR_EXIT == 1  # Other bad input.
  assert capsys.readouterr().err.startswith("error: cannot read x")


def test_parser_style_bad_flags_exit_2_with_one_line(capsys):
  parser = cli.Parser("heldout test", "A test command.")
  cli.add_root(parser)
  cli.add_progress(parser)
  cli.add_engine(parser)
  args = parser.parse_args(["--root", "r", "--noprogress"])
  assert (args.root, args.progress, args.engine) == ("r", False, "local")
  assert parser.parse_args([]).progress is True
  with pytest.raises(SystemExit) as exit_info:
    parser.parse_args(["--bogus"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == (
      "error: unrecognized arguments: --bogus\n")
  with pytest.raises(SystemExit):
    parser.parse_args(["--engine", "spark"])
  assert capsys.readouterr().err.startswith("error: argument --engine")
  with pytest.raises(errors.UsageError, match="--ray_address needs"):
    cli.check_engine(parser.parse_args(["--ray_address", "h:1"]))
  assert "(default: local)" in " ".join(parser.format_help().split())


def test_run_keeps_tracebacks_of_bugs():
  def main(argv):
    raise KeyError("a bug")
  with pytest.raises(KeyError):
    cli.run(main)


def test_user_path_names_the_path(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(errors.PathError, match=r"cannot write .*file/sub: "):
    with errors.user_path(str(blocker / "sub")):
      (blocker / "sub").mkdir()


def test_check_writable_names_the_path_not_a_probe(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(errors.PathError,
                     match=r"cannot write .*file/out.npz: .* not a directory"):
    files.check_writable(str(blocker / "out.npz"))
  with pytest.raises(errors.PathError, match=r"it is a directory, not a regular file"):
    files.check_writable(str(tmp_path))
  with pytest.raises(errors.PathError,
                     match=r"^cannot write /sys/x\.npz: Permission denied"):
    files.check_writable("/sys/x.npz")
  files.check_writable(str(tmp_path / "new" / "out.npz"))  # Fine: creates.
  assert (tmp_path / "new").is_dir()


# ----------------------- issue 18: one command-line style, `heldout` ------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The commands this branch converts: (how to start it, its module).
MINE = (("-m", "heldout_tf.cli.download"), ("-m", "heldout_tf.cli.evaluate"),
        ("-m", "heldout_tf.cli.estimate"), ("-m", "heldout_tf.cli.commands"),
        ("-m", "heldout_tf.cli.datamodels"), ("-m", "heldout_tf.cli.lds"),
        ("demo.py", "demo"))


def _help_loads_tensorflow(how, target, *args):
  """Runs `--help` as `python -m target` / `python demo.py` would, in a
  subprocess; returns (stdout, whether TensorFlow was imported)."""
  run = (f"runpy.run_module({target!r}, run_name='__main__')" if how == "-m"
         else f"runpy.run_path({os.path.join(REPO, 'demo.py')!r}, "
         "run_name='__main__')")
  code = ("import runpy, sys\n"
          f"sys.argv = ['prog', *{list(args)!r}, '--help']\n"
          f"try:\n  {run}\nexcept SystemExit as e:\n  assert not e.code, e\n"
          "print('TF', 'tensorflow' in sys.modules)")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, cwd=REPO, timeout=120, check=True,
                        env=dict(os.environ, PYTHONPATH=REPO))
  return proc.stdout, proc.stdout.rstrip().endswith("TF True")


@pytest.mark.parametrize("how,module", MINE)
def test_help_does_not_wait_for_tensorflow(how, module):
  stdout, loaded = _help_loads_tensorflow(
      how, module if how == "-m" else "demo.py")
  assert "usage:" in stdout and not loaded, stdout


@pytest.mark.parametrize("module,argv", [
    ("heldout_tf.cli.datamodels", ["--root", "r", "--experiment", "e",
                                   "--fit_runs", "0-9", "--out", "o.npz",
                                   "--top_k", "0"]),
    ("heldout_tf.cli.lds", ["--root", "r", "--experiment", "e",
                            "--eval_runs", "x"]),
    ("heldout_tf.cli.estimate", ["--root", "r", "--experiment", "e",
                                 "--out", "o.npz", "--target", "loss"]),
])
def test_attribution_commands_refuse_bad_flags_before_tensorflow(module,
                                                                 argv):
  code = ("import runpy, sys\n"
          f"sys.argv = ['prog', *{argv!r}]\n"
          f"try:\n  runpy.run_module({module!r}, run_name='__main__')\n"
          "except SystemExit as e:\n  print('EXIT', e.code)\n"
          "print('TF', 'tensorflow' in sys.modules)")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, cwd=REPO, timeout=120,
                        env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.stdout.split() == ["EXIT", "2", "TF", "False"], proc.stdout
  assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_help_through_the_dispatcher_does_not_load_tensorflow():
  stdout, loaded = _help_loads_tensorflow("-m", "heldout_tf.cli.commands",
                                          "evaluate")
  assert "usage: heldout evaluate" in stdout and not loaded, stdout
  # The check can fail: running a command does load TensorFlow.
  code = ("import sys; from heldout_tf import cli; cli.quiet_tensorflow(); "
          "print('TF', 'tensorflow' in sys.modules)")
  assert subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, check=True).stdout.strip() == "TF True"


def test_every_build_parser_shows_defaults_and_the_root_flag():
  # pylint: disable=g-import-not-at-top
  from heldout_tf.cli import download
  from heldout_tf.cli import estimate
  from heldout_tf.cli import evaluate
  for module in (download, estimate, evaluate):
    parser = module.build_parser()
    assert isinstance(parser, cli.Parser)
    options = parser._option_string_actions  # pylint: disable=protected-access
    assert "--root" in options and "--dest" not in options
    assert "--progress" in options or module is estimate
  text = " ".join(estimate.build_parser().format_help().split())
  for default in ("(default: auto)", "(default: 0.15)",
                  "(default: 0.25)", "(default: 4GB)", "(default: local)"):
    assert default in text


@pytest.mark.parametrize("module,argv,message", [
    ("heldout_tf.cli.download", ["--runs", "1-x"], "error: --runs: '1-x'"),
    ("heldout_tf.cli.download", ["--bogus"], "error: unrecognized arguments"),
    ("heldout_tf.cli.evaluate", ["--ratios", "0"], "error: --ratios: ratio must"),
    ("heldout_tf.cli.evaluate", ["--split", "dev"], "error: argument --split"),
    ("heldout_tf.cli.estimate", ["--root", "r", "--experiment", "e"],
     "error: the following arguments are required: --out"),
])
def test_bad_flags_exit_2_with_an_error_line(module, argv, message, capsys):
  main = __import__(module, fromlist=["main"]).main
  with pytest.raises(SystemExit) as exit_info:
    cli.run(main, ["--experiment", "cifar10-inception", "--root", "r",
                   *argv] if module == "heldout_tf.cli.download" else argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith(message) and err.count("\n") == 1, err


def test_dispatcher_runs_the_module_of_each_command(capsys, monkeypatch):
  assert list(commands.COMMANDS) == [
      "download", "evaluate", "estimate", "datamodels", "lds", "export",
      "train", "quality", "report"]
  with pytest.raises(SystemExit) as exit_info:
    cli.run(commands.main, ["estimate", "--help"])
  assert exit_info.value.code == 0
  assert capsys.readouterr().out.startswith("usage: heldout estimate")
  assert commands.main(["--help"]) == 0
  out = capsys.readouterr().out
  for name, (module, _) in commands.COMMANDS.items():
    assert f"  {name} " in out and f"(python -m {module})" in out
  assert commands.main([]) == 2  # No command: the list, on stderr.
  assert "commands:" in capsys.readouterr().err
  with pytest.raises(errors.UsageError, match="unknown command 'nope'"):
    commands.main(["nope"])
  # A command whose module is not installed fails alone, saying so.
  monkeypatch.setitem(commands.COMMANDS, "later",
                      ("heldout_tf.not_written_yet", "later"))
  with pytest.raises(errors.UsageError,
                     match="command 'later' is not available: its module "
                     "heldout_tf.not_written_yet is not in this "
                     "installation"):
    commands.main(["later", "--help"])


def test_dispatcher_keeps_a_missing_dependency_a_real_error(tmp_path,
                                                            monkeypatch):
  (tmp_path / "needs_missing.py").write_text("import no_such_dependency_x\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setitem(commands.COMMANDS, "needy", ("needs_missing", "x"))
  with pytest.raises(ModuleNotFoundError, match="no_such_dependency_x"):
    commands.main(["needy"])


def test_dispatcher_as_a_module_exits_2_for_a_bad_flag():
  proc = subprocess.run(
      [sys.executable, "-m", "heldout_tf.cli.commands", "evaluate", "--runs",
       "x"], capture_output=True, text=True, cwd=REPO, timeout=120,
      env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.returncode == 2
  assert proc.stderr == ("error: --runs: 'x' is not a run id (an integer "
                         ">= 0, e.g. 0, 3 or 12)\n")


def test_setup_installs_the_heldout_script():
  with open(os.path.join(REPO, "setup.py")) as f:
    assert '"heldout = heldout_tf.cli.commands:entry_point"' in f.read()


@pytest.mark.parametrize("text,want", [
    ("0,3,7", [0, 3, 7]), ("03", [3]), ("7,0-2,2", [0, 1, 2, 7]),
    (" 4 , 5 ", [4, 5]), ("all", None), (None, None)])
def test_run_id_lists_read_the_same_everywhere(text, want):
  assert selection.parse_run_ids(text) == want


@pytest.mark.parametrize("text,message", [
    ("abc", "'abc' is not a run id"), ("-1", "'-1' is not a run id"),
    ("+3", "'+3' is not a run id"), ("1.5", "'1.5' is not a run id"),
    ("٣", "'٣' is not a run id"), (",", "nothing in ','"),
    ("5-2", "range '5-2' is empty"),
    ("0-99999999", "range '0-99999999' holds more than")])
def test_bad_run_id_lists_name_the_flag(text, message):
  with pytest.raises(errors.UsageError,
                     match="^" + re.escape(f"--runs: {message}")):
    selection.parse_run_ids(text)


def test_ratio_lists_and_single_values():
  assert selection.parse_ratios("0.70,0.1,1") == [0.1, 0.7, 1.0]
  assert selection.parse_ratios("all") is None
  for bad in ("0", "1.5", "nan", "x", ""):
    with pytest.raises(errors.UsageError, match="^--ratios: "):
      selection.parse_ratios(bad)
  assert selection.run_id(3.0) == selection.run_id("03") == 3
  for bad in (True, -1, 2.5, None):
    with pytest.raises(errors.UsageError, match="is not a run id"):
      selection.run_id(bad)
  # The archive's selection reads the same values.
  from heldout_tf.archive import members  # pylint: disable=g-import-not-at-top
  chosen = members.Selection.parse("aux", ["0.70"], ["03", 4])
  assert (chosen.ratios, chosen.runs) == (frozenset({0.7}),
                                          frozenset({3, 4}))


def test_one_registry_of_experiments():
  assert sorted(experiments.EXPERIMENTS) == [
      "cifar10-inception", "cifar100-inception", "imagenet-resnet50",
      "mnist-mlp"]
  assert sorted(experiments.RELEASED) == sorted(
      n for n, e in experiments.EXPERIMENTS.items() if e.md5)
  mnist = experiments.get("mnist-mlp")
  assert (mnist.arch, mnist.num_classes, mnist.input_shape,
          mnist.dataset_name, mnist.released) == ("mlp", 10, (28, 28, 1),
                                                  "mnist", False)
  assert experiments.get("imagenet-resnet50").input_shape == (224, 224, 3)
  with pytest.raises(errors.UsageError, match="'mnist-mlp' is unknown"):
    experiments.get("mnist-mlp", released_only=True)
  # pylint: disable=g-import-not-at-top
  from heldout_tf.collection import exports
  from heldout_tf import models
  from heldout_tf.estimates import published
  for name, e in experiments.EXPERIMENTS.items():
    spec = exports.model_spec(name)
    assert (spec.arch, spec.num_classes, spec.preprocessing) == (
        e.arch, e.num_classes, e.preprocessing)
    assert tuple(models.input_shape(e.arch)) == e.input_shape
    dataset = published._experiment_dataset(name)  # pylint: disable=protected-access
    assert dataset == e.dataset_name


def test_download_hint_can_be_pasted(tmp_path):
  text = experiments.download_instructions("cifar10-inception",
                                        str(tmp_path / "a b"), 0.3, [7, 9])
  line = next(l for l in text.splitlines() if "heldout_tf.cli.download" in l)
  assert "[" not in line and "|" not in line
  from heldout_tf.cli import download  # pylint: disable=g-import-not-at-top
  words = shlex.split(line)
  assert words[:3] == ["python", "-m", "heldout_tf.cli.download"]
  args = download.build_parser().parse_args(words[3:])
  assert (args.experiment, args.root, args.ratios, args.runs) == (
      "cifar10-inception", str(tmp_path / "a b"), "0.3", "7,9")
