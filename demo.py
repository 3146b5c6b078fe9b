r"""`python demo.py` in a clone: the same as `heldout evaluate`.

  python demo.py --experiment cifar10-inception --ratios 0.7 --runs 0

Restores released runs, re-evaluates them and cross-checks aux_arrays.npz;
see `heldout_tf.cli.evaluate` (the command; `python -m heldout_tf.cli.evaluate`
works from any directory) and `heldout_tf.collection.evaluation` (the library).
"""

from heldout_tf import cli
from heldout_tf.cli import evaluate

build_parser = evaluate.build_parser

if __name__ == "__main__":
  cli.run(lambda argv: evaluate.main(argv, prog="python demo.py"))
