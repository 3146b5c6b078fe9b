"""heldout_tf: use and reproduce the released held-out training checkpoints.

Modules: `released` (the three experiments), `archive` / `download` (get
them), `runs` (the run layout and aux_arrays.npz), `models` and `checkpoints`
(build and strictly restore), `data` and `evaluation` (re-evaluate and
cross-check), `estimates` / `estimate` (memorization, influence, C-scores),
`training` (many subset models at once).
"""

__version__ = "0.1.0"
