"""`python -m heldout_tf.cli <command>`: the `heldout` command."""

from heldout_tf.cli import commands

if __name__ == "__main__":
  commands.entry_point()
