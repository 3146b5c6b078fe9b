"""Training: the one workflow that makes a collection of subset-trained
runs, for any data and model, and what it stands on.

  workflow      `Options` (every setting, the flags as a value) and `make`
  fields        every setting's type and range, for flags, library values
                and recorded configs alike
  recipes       training recipes as data (which settings are the papers')
  settings      `TrainSettings`, everything a run depends on; the engines'
                names and what each can train
  engines       the trainers' one interface, and the choice between them
  run_plan      a run's subset, initial model, variables and step plan
  trainer       one Sonnet model at a time, resumable, with signals
  group         the group engine: several runs side by side, any model
  stacked       the stacked engine: G MLPs with stacked weights
  steps         one training step: augmentation, loss, the SGD rule
  records       what a trained run leaves behind (checkpoint, signals,
                aux arrays with correctness)
  blocks        the block trainer a collection's blocks are trained with
"""
