"""A collection on disk, and the one loop that makes one.

Reading a collection (no TensorFlow): `layout` (every file and directory
name, parsed in one place), `selection` (run-id and ratio lists as
people type them), `runs` (the one
`aux_arrays.npz` reader and writer), `signals` (each run's `signals.npz`),
`margins` (each run's `margins.npz`: final margins and label
probabilities), `experiments` (the registry: the released three and the
kit's own; download instructions for the released archives),
`provenance` (where a collection's data comes from, and the
one way back from its recorded config to that data), `recorded` (a kit
collection's recorded model and data, for the commands that restore its
runs). With TensorFlow:
`checkpoints` (a run's `ckpt-<N>` files: strict, all-or-nothing restore,
safe save), `evaluation` (a model evaluated on a split, checked against a
run's record), `reevaluation` (restore a collection's runs, re-evaluate,
cross-check, record margins), `exports` (a run's model as ONNX,
safetensors or npz; `export_formats`: those files and their checks).

A collection is the runs of one experiment at one subset ratio under a
root, in the released layout:

  <root>/<experiment>/<ratio>/config.json     every setting runs depend on
  <root>/<experiment>/<ratio>/<run>/aux_arrays.npz   (written last)
  <root>/<experiment>/<ratio>/<run>/checkpoints/...

Making one, whatever the data and model:

  spec = collection.Spec(root, "my-exp", 0.7, group_size, factory,
                         factory_args, config=recorded_settings)
  report = collection.train(spec, collection.shard_runs(n, "0/1", G),
                            engine="local")    # or "ray", address=...

Making one: `store` (`Store`: recorded config, finished runs, atomic
idempotent run writes), `blocks` (canonical blocks and shards), `rules`
(flags versus the recorded config: `resolve_precision`,
`resolve_group_size`; `fingerprint` of the data), `engine` (`Spec`,
`train`, `plan`).

The block-trainer protocol. `spec.factory(*spec.factory_args)` is a
picklable top-level callable returning a block trainer: an object with

  is_done(store, run) -> bool
      Whether run `run` is finished for this pipeline (e.g.
      `store.is_finished(run, need_checkpoint=True)`, plus any file the
      pipeline writes per run). Must be cheap and must not need the data:
      the driver builds one block trainer only to ask this.
  train_block(store, runs) -> list of run ids written
      Trains the canonical block holding `runs` (all of one block,
      `blocks.block_of(runs, G)`) and writes those of `runs` that are not
      done (`store.write_run`: checkpoint first, aux arrays last), each a
      pure function of (recorded config, run id): a block whose runs are
      partly finished is retrained whole and only its missing runs written,
      so a run's bits never depend on how the collection was produced (one
      job, shards, kill and resume, Ray). It may keep per-run state for a
      mid-run resume (e.g. per-epoch checkpoints) as long as the result is
      the same. Safe to repeat: finished runs are skipped, writes atomic.
      `train` calls it holding the block's lock (`engine.train_block`),
      so it re-checks `is_done` first: another writer may have finished
      the block meanwhile.

The factory is called once per process (the local engine's, or each Ray
worker's) and its result reused for every block; build heavy state (data,
compiled steps) lazily on the first `train_block`, so the driver's planning
copy stays light. `heldout_tf.training.blocks.ModelBlocks` is one
implementation; nothing here assumes a model.
"""

from heldout_tf.collection.blocks import block_of
from heldout_tf.collection.blocks import block_runs
from heldout_tf.collection.blocks import groups
from heldout_tf.collection.blocks import is_sharded
from heldout_tf.collection.blocks import NO_SHARD
from heldout_tf.collection.blocks import parse_shard
from heldout_tf.collection.blocks import shard_runs
from heldout_tf.collection.engine import check_engine
from heldout_tf.collection.engine import ENGINES
from heldout_tf.collection.engine import plan
from heldout_tf.collection.engine import Spec
from heldout_tf.collection.engine import train
from heldout_tf.collection.rules import fingerprint
from heldout_tf.collection.rules import resolve_group_size
from heldout_tf.collection.rules import resolve_precision
from heldout_tf.collection.store import IncompleteRunsError
from heldout_tf.collection.store import MissingConfigError
from heldout_tf.collection.store import Store
