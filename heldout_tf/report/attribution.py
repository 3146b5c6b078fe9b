"""The attribution section's inputs: a collection's LDS table, and each test
example's top influencers by one attribution.

  <ratio>/attribution/lds.npz          `heldout lds`'s table (its default
                                       --out): methods x LDS per test example
  <ratio>/attribution/datamodels.npz   `heldout datamodels`' fit (its
                                       default --out)

(names from `heldout_tf.collection.layout`). A report of one ratio finds
them there; `report.write(lds=..., attribution=...)` (`heldout report --lds
--attribution`) names others. The influencers come from any score file
`heldout lds` judges (`estimates.attributions.read`: a datamodels file, an
estimates file's dense influence or pairs, your own scores): per test
example the `K_SHOWN` training examples with the largest positive and the
most negative scores (`attributions.top_influencers`). Files are read as
untrusted (the hardened npz reader, every key's shape from the runs); a bad
one is a `ReportInputError` naming it and the key.
"""

import dataclasses
import os
from typing import Optional

import numpy as np

from heldout_tf.estimates import attributions
from heldout_tf.estimates import lds as lds_lib
from heldout_tf.report import inputs

K_SHOWN = 8  # Influencers of each sign per test example on the page.
MAX_METHODS = 1000  # Rows of an LDS table.


@dataclasses.dataclass
class Attribution:
  """What the attribution section and the test cards show."""
  lds: Optional[dict] = None  # The table (JSON values): `read_lds`.
  method: str = ""  # The influencers' attribution (a score file's name).
  influencers: Optional[dict] = None  # `top_pos_idx`, ... [n_test, k].
  # float64 [n_test]: the LDS per test example of `method`, when the table
  # has it.
  method_lds: Optional[np.ndarray] = None
  sources: dict = dataclasses.field(default_factory=dict)  # Paths read.


def read_lds(path: str, n_test: int):
  """`(table, per_example)`: an LDS file (`estimates.lds.save`) checked
  against the collection's `n_test` test examples; the table as the page
  shows it (`rows` of method, mean, se, undefined, fit_runs; `runs`, the
  evaluation runs described; `n_test`), `per_example` float64 [m,
  n_test]."""
  m = {"ndim": 1, "max_elements": MAX_METHODS}
  limits = {"methods": dict(m, kinds="U"), "mean": dict(m, kinds="f"),
            "se": dict(m, kinds="f"), "num_undefined": dict(m, kinds="iu"),
            "num_fit_runs": dict(m, kinds="iu"),
            "lds": {"kinds": "f", "ndim": 2,
                    "max_elements": MAX_METHODS * max(n_test, 1)},
            "eval_run_ids": {"kinds": "iu", "ndim": 1},
            "eval_run_ratios": {"kinds": "f", "ndim": 1}}
  arrays = inputs.read_arrays(path, limits)
  missing = [k for k in limits if k not in arrays]
  if missing:
    raise inputs.ReportInputError(f"{path}: key {missing[0]!r} is missing "
                                  "(not a heldout lds file?)")
  count = len(arrays["methods"])
  for key in ("mean", "se", "num_undefined", "num_fit_runs"):
    if arrays[key].shape != (count,):
      raise inputs.ReportInputError(
          f"{path}: key {key!r} has shape {arrays[key].shape}, the file "
          f"names {count} methods")
  if arrays["lds"].shape != (count, n_test):
    raise inputs.ReportInputError(
        f"{path}: key 'lds' has shape {arrays['lds'].shape}, expected "
        f"({count}, {n_test}): the LDS of other test examples")
  undefined = arrays["num_undefined"]
  if undefined.size and (undefined.min() < 0 or undefined.max() > n_test):
    raise inputs.ReportInputError(f"{path}: key 'num_undefined' must lie in "
                                  f"[0, {n_test}]")
  ids, ratios = arrays["eval_run_ids"], arrays["eval_run_ratios"]
  if ids.shape != ratios.shape:
    raise inputs.ReportInputError(f"{path}: keys 'eval_run_ids' and "
                                  "'eval_run_ratios' differ in length")
  rows = [{"method": str(arrays["methods"][k]),
           "mean": float(arrays["mean"][k]), "se": float(arrays["se"][k]),
           "undefined": int(undefined[k]),
           "fit_runs": int(arrays["num_fit_runs"][k])} for k in range(count)]
  table = {"rows": rows, "runs": lds_lib.describe_runs(ratios, ids),
           "n_test": n_test, "file": os.path.basename(path)}
  return table, arrays["lds"].astype(np.float64)


def read(lds_path: Optional[str], scores_path: Optional[str], n_train: int,
         n_test: int) -> Attribution:
  """The attribution section's data from an LDS file and a score file
  (either may be None)."""
  out = Attribution()
  per_example = None
  if lds_path is not None:
    out.lds, per_example = read_lds(lds_path, n_test)
    out.sources["lds"] = lds_path
  if scores_path is not None:
    source = attributions.read(scores_path, n_train, n_test)
    out.method = source.name
    out.influencers = attributions.top_influencers(source, n_train, n_test,
                                                   K_SHOWN)
    out.sources["attribution"] = scores_path
    if out.lds is not None:
      names = [row["method"] for row in out.lds["rows"]]
      if source.name in names:
        out.method_lds = per_example[names.index(source.name)]
  return out
