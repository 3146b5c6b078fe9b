"""Training: recipes, the trainers, and the workflow that makes a
collection of subset-trained runs.

  recipes         training recipes as data (which settings are the papers')
  model_training  one Sonnet model at a time, or several side by side
  ensemble        many MLPs at once (stacked weights, batched matmuls)
  model_blocks    the block trainer and the `make` workflow
"""
