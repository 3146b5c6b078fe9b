"""Every command line shown in README.md and docs/*.md exists as shown.

Each line of a fenced code block that runs a kit command (`heldout X`,
`python -m <kit module>`, `python demo.py`; `\\` continuations joined,
`&&`/`;`/`|` split, comments dropped) must name a module that exists and
exposes `build_parser()`, and every `--flag` it shows must be one that
parser accepts (the command is not run). Pages are discovered, so a new
page is checked as soon as it is added.
"""

import dataclasses
import glob
import os
import re
import shlex
import sys
from typing import List, Optional

import pytest

from heldout_tf import cli
from heldout_tf.cli import commands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted([os.path.join(REPO, "README.md")] +
               glob.glob(os.path.join(REPO, "docs", "*.md")))
KIT_PACKAGES = ("heldout_tf", "mnist_example")
TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest'


@dataclasses.dataclass
class Command:
  """One kit command line found on a page."""
  page: str  # Relative to the repository.
  line: int  # 1-based, of the command's first line.
  text: str
  module: str  # e.g. heldout_tf.cli.download, or demo.
  args: List[str]

  def where(self) -> str:
    return f"{self.page}:{self.line}"


def _code_lines(text: str):
  """`(line number, line)` of the fenced code blocks, continuations joined."""
  inside, joined, start = False, "", 0
  for number, line in enumerate(text.splitlines(), 1):
    if line.lstrip().startswith("```"):
      inside, joined = not inside, ""
      continue
    if not inside:
      continue
    if not joined:
      start = number
    if line.rstrip().endswith("\\"):
      joined += line.rstrip()[:-1] + " "
      continue
    yield start, joined + line
    joined = ""


def _module_of(words: List[str]) -> Optional[tuple]:
  """`(module, args)` when `words` run a kit command, else None."""
  while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
    words = words[1:]  # VAR=value prefixes.
  if len(words) >= 2 and words[0] == "heldout":
    if words[1] not in commands.COMMANDS:
      return f"<unknown heldout command {words[1]!r}>", words[2:]
    return commands.COMMANDS[words[1]][0], words[2:]
  if words[:1] == ["heldout"]:
    return "heldout_tf.cli.commands", words[1:]
  if words[:1] in (["python"], ["python3"]):
    if words[1:2] == ["demo.py"]:
      return "demo", words[2:]
    if words[1:2] == ["-m"] and len(words) > 2 and (
        words[2].split(".")[0] in KIT_PACKAGES):
      return words[2], words[3:]
  return None


def find_commands(text: str, page: str) -> List[Command]:
  """The kit command lines in the fenced code blocks of `text`."""
  found = []
  for number, line in _code_lines(text):
    try:
      words = shlex.split(line, comments=True)
    except ValueError:
      continue  # Not shell (e.g. a Python line with an odd quote).
    segment = []
    for word in words + ["&&"]:
      if word in ("&&", ";", "|", "||"):
        hit = _module_of(segment)
        if hit:
          found.append(Command(page, number, " ".join(line.split()), *hit))
        segment = []
      else:
        segment.append(word)
  return found


def problems(command: Command) -> List[str]:
  """What is wrong with `command` (empty when it is as the parser takes it):
  a missing module, no `build_parser`, an unknown flag, a value outside a
  flag's choices. Each names the page, line and flag."""
  if command.module.startswith("<"):
    return [f"{command.where()}: {command.module} in: {command.text}"]
  if command.module == "demo" and REPO not in sys.path:
    sys.path.insert(0, REPO)
  try:
    module = cli.command_module(command.module)
  except ModuleNotFoundError as e:
    return [f"{command.where()}: module {command.module} does not exist "
            f"({e}) in: {command.text}"]
  if command.module == "heldout_tf.cli.commands":
    return [] if not command.args or command.args[0] in ("-h", "--help") \
        else [f"{command.where()}: unknown heldout command in: "
              f"{command.text}"]
  if not hasattr(module, "build_parser"):
    return [f"{command.where()}: {command.module} has no build_parser(), so "
            f"its flags cannot be checked, in: {command.text}"]
  parser = module.build_parser()
  options = parser._option_string_actions  # pylint: disable=protected-access
  found = []
  args = [a.strip("[]") for a in command.args]
  for i, arg in enumerate(args):
    if not arg.startswith("--"):
      continue
    flag, _, value = arg.partition("=")
    if flag not in options:
      found.append(f"{command.where()}: {flag} is not a flag of "
                   f"{command.module} in: {command.text}")
      continue
    action = options[flag]
    if not value and action.nargs != 0 and i + 1 < len(args):
      value = args[i + 1]
    if (action.choices and value and not value.startswith("--") and
        "|" not in value and value not in action.choices):
      found.append(f"{command.where()}: {flag} {value} is not one of "
                   f"{sorted(action.choices)} in: {command.text}")
  return found


def _page_commands():
  for path in PAGES:
    with open(path, encoding="utf-8") as f:
      yield from find_commands(f.read(), os.path.relpath(path, REPO))


ALL_COMMANDS = list(_page_commands())


def test_pages_are_found_and_show_commands():
  pages = {c.page for c in ALL_COMMANDS}
  for page in ("README.md", "docs/download.md", "docs/evaluate.md",
               "docs/estimates.md", "docs/export.md",
               "docs/published-scores.md"):
    assert page in pages, f"{page} shows no kit command (or is missing)"


@pytest.mark.parametrize("command", ALL_COMMANDS,
                         ids=[c.where() for c in ALL_COMMANDS])
def test_command_and_its_flags_exist(command):
  found = problems(command)
  assert not found, "\n".join(found)


def test_the_check_finds_a_bad_flag_and_a_missing_module():
  page = ("Text.\n\n```bash\nheldout download --experiment cifar10-inception"
          " \\\n    --dest DIR --only aux\n"
          "python -m heldout_tf.no_such_module --x 1\n"
          "heldout evaluate --split validation  # A comment --bogus.\n"
          "python -m pytest --whatever && heldout frobnicate\n```\n"
          "heldout download --not_in_a_block\n")
  found = find_commands(page, "docs/x.md")
  assert [(c.line, c.module) for c in found] == [
      (4, "heldout_tf.cli.download"), (6, "heldout_tf.no_such_module"),
      (7, "heldout_tf.cli.evaluate"), (8, "<unknown heldout command "
                                      "'frobnicate'>")]
  assert problems(found[0]) == [
      "docs/x.md:4: --dest is not a flag of heldout_tf.cli.download in: "
      "heldout download --experiment cifar10-inception --dest DIR "
      "--only aux"]
  assert problems(found[1])[0].startswith(
      "docs/x.md:6: module heldout_tf.no_such_module does not exist")
  assert problems(found[2]) == [
      "docs/x.md:7: --split validation is not one of ['both', 'test', "
      "'train'] in: "
      "heldout evaluate --split validation # A comment --bogus."]
  assert problems(found[3])[0].startswith("docs/x.md:8: <unknown heldout")


def test_readme_links_every_page_and_gives_the_ci_test_command():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  assert TEST_COMMAND in readme
  for name in ("download", "evaluate", "estimates", "export",
               "published-scores", "mnist", "data-quality", "many-machines",
               "collections", "report"):
    assert f"(docs/{name}.md)" in readme, name
  for path in PAGES[1:]:
    assert f"(docs/{os.path.basename(path)})" in readme, path
  for command, (module, _) in commands.COMMANDS.items():
    assert f"`heldout {command}`" in readme, command
    assert f"`python -m {module}`" in readme, module


def test_every_linked_page_exists():
  missing = []
  for path in PAGES:
    with open(path, encoding="utf-8") as f:
      text = f.read()
    for number, line in enumerate(text.splitlines(), 1):
      for target in re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", line):
        if re.match(r"[a-z]+:", target):
          continue  # http:, https:, mailto:
        if not os.path.exists(os.path.join(os.path.dirname(path), target)):
          missing.append(f"{os.path.relpath(path, REPO)}:{number}: links to "
                         f"{target}, which does not exist")
  assert not missing, "\n".join(missing)


# ------------------------------------------------ the first hour, run whole --

WALKTHROUGH_PAGE = os.path.join(REPO, "docs", "collections.md")
WALKTHROUGH_HEADING = "## Your first hour"


def walkthrough_blocks(text: str):
  """`(language, body)` of every fenced block between the walk-through's
  heading and the next `## ` heading, in order."""
  section = text.split(WALKTHROUGH_HEADING, 1)[1].split("\n## ", 1)[0]
  return re.findall(r"^```(\w*)\n(.*?)^```", section, re.S | re.M)


def run_walkthrough(directory: str, say=lambda line: None):
  """Runs the walk-through as a reader would, in `directory`: a Python
  block whose first line is `# NAME.py` is that file, written, then run
  unless it is a module others import (`# NAME.py` alone on its line with
  no script below: `my_nets.py`); every bash line runs as written, with
  `heldout` this checkout's command (`python -m heldout_tf.cli.commands`);
  `pip install` lines are skipped. Returns every command's output."""
  import subprocess  # pylint: disable=g-import-not-at-top
  with open(WALKTHROUGH_PAGE, encoding="utf-8") as f:
    blocks = walkthrough_blocks(f.read())
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  outputs = []
  for language, body in blocks:
    if language == "python":
      name = body.splitlines()[0].lstrip("# ").split(":")[0].strip()
      assert name.endswith(".py"), f"a Python block names no file: {body}"
      with open(os.path.join(directory, name), "w") as f:
        f.write(body)
      if name == "my_nets.py":
        continue  # A module: the commands import it.
      argv = [sys.executable, name]
    elif language == "bash":
      for line in body.strip().splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[:2] == ["pip", "install"]:
          continue
        assert words[0] == "heldout", line
        argv = [sys.executable, "-m", "heldout_tf.cli.commands"] + words[1:]
        say(line)
        out = subprocess.run(argv, cwd=directory, env=env,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, (line, out.stderr[-3000:])
        outputs.append((line, out.stdout, out.stderr))
      continue
    else:
      continue  # Output shown on the page, not a command.
    say(name)
    out = subprocess.run(argv, cwd=directory, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, (name, out.stderr[-3000:])
    outputs.append((name, out.stdout, out.stderr))
  return outputs


def test_the_walkthrough_is_found_and_its_commands_are_checked():
  with open(WALKTHROUGH_PAGE, encoding="utf-8") as f:
    text = f.read()
  blocks = walkthrough_blocks(text)
  commands_shown = [line for language, body in blocks if language == "bash"
                    for line in body.strip().splitlines()]
  for needed in ("heldout train", "heldout estimate", "heldout quality",
                 "heldout report", "heldout evaluate", "heldout export"):
    assert any(line.startswith(needed) for line in commands_shown), needed
  assert any("snt.Sequential" in body for _, body in blocks)
  assert any("features_and_logits" in body for _, body in blocks)


@pytest.mark.slow
def test_the_first_hour_runs_as_written(tmp_path):
  # Every block of the walk-through, in order, in an empty directory
  # (about two minutes on 2 CPU cores).
  outputs = run_walkthrough(str(tmp_path))
  text = "\n".join(out + err for _, out, err in outputs)
  assert "Recipe mnist-mlp (written for mlp):" in text
  assert "warning:" not in "".join(
      err for line, _, err in outputs if "train" in line), text
  evaluate = [out for line, out, _ in outputs if "evaluate" in line][0]
  assert evaluate.count("1400 out of 1400 predictions match") == 4
  assert evaluate.count("397 out of 397 predictions match") == 4
  for name in ("my_digits-report.html", "mlp64-run0.onnx", "mlp-run0.npz",
               "my_digits-estimates.npz",
               "runs/my_digits-mlp64/0.7/figures/memorization_examples.png",
               "runs/my_digits-mlp64/0.7/quality/top_suspicious.png"):
    assert os.path.isfile(tmp_path / name), name
