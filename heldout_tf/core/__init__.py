"""Foundations every stage stands on; none of them imports TensorFlow at
import time, and none imports another stage.

  errors      `HeldoutError`, the base of every input error; `user_path`
  files       atomic writes (regular destinations only), directory locks
  npz         the one hardened reader of untrusted .npz / .npy files
  npy         the npy header, read and checked before anything is allocated
  sizes       byte sizes and available memory
  progress    progress bars (lines when not on a terminal)
  figures     the PNG writer (matplotlib Agg, atomic)
  hardware    the one precision table and 'auto' precision
  seeds       every stream of a collection's randomness, and its draws
  raycluster  Ray connection and tasks
  startup     importing TensorFlow quietly
  lazy        front doors that import on first use
"""
