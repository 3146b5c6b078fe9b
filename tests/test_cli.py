"""heldout_tf.cli: quiet TensorFlow start-up, error lines for kit errors."""

import subprocess
import sys

import pytest

from heldout_tf import cli
from heldout_tf import errors

_NOISE = ("oneDNN custom operations", "cuInit", "InitializeLog",
          "cpu_feature_guard", "cuda drivers")


def _stderr(code, **env):
  import os  # pylint: disable=g-import-not-at-top
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
    errors.check_writable(str(blocker / "out.npz"))
  with pytest.raises(errors.PathError, match=r"Is a directory"):
    errors.check_writable(str(tmp_path))
  with pytest.raises(errors.PathError,
                     match=r"^cannot write /sys/x\.npz: Permission denied"):
    errors.check_writable("/sys/x.npz")
  errors.check_writable(str(tmp_path / "new" / "out.npz"))  # Fine: creates.
  assert (tmp_path / "new").is_dir()
