//! Training: optimisers, schedules, SWA, the training loop, checkpoints and metrics.
