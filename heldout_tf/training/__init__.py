"""Training: the one workflow that makes a collection of subset-trained
runs, for any data and model, and what it stands on.

  workflow        `Options` (every setting, the flags as a value) and `make`
  fields          every setting's type and range, for flags, library values
                  and recorded configs alike
  recipes         training recipes as data (which settings are the papers')
  model_training  one Sonnet model at a time, or several side by side
  ensemble        many MLPs at once (stacked weights, batched matmuls)
  model_blocks    the block trainer a collection's blocks are trained with
"""
