"""Data quality: scores of every training example from a collection
trained with signals, how well they find known noise, and removal
ablations.

  scores     held-out memorization, C-score, loss, TracIn, AUM, SSFT,
             confident learning
  detection  ROC AUC, precision at k; removal sets
  removal    retrain without each score's top examples
  figures    roc, precision_at_k, top_suspicious, removal
  workflow   score a collection (and train it first) and write outputs
"""
