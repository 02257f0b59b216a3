"""The core loop: a run resolved once (run), training, evaluation, checkpoints, devices."""
