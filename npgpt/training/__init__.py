"""Training: the loop, one step's micro-batches, AdamW and schedules, checkpoints, logs, MPI.

Import from the modules (npgpt.training.loop, .checkpoint, ...): this package file imports nothing, so
generation can read checkpoints without loading the training loop.
"""
