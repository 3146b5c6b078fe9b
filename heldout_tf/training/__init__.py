"""Training: recipes, the engines, and the workflow that makes a
collection of subset-trained runs.

  recipes       training recipes as data (which settings are the papers')
  settings      `TrainSettings`, everything a run depends on
  steps         one training step: augmentation, loss, the SGD rule
  records       what a trained run leaves behind (checkpoint, signals,
                aux arrays with correctness)
  trainer       one Sonnet model at a time, resumable, with signals
  group         the group engine: several runs side by side
  stacked       the stacked engine: G MLPs with stacked weights
  engines       the engines' one interface, and the choice between them
  model_blocks  the block trainer and the `make` workflow
"""
