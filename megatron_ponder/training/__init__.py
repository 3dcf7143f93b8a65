"""The pretraining job: loop, optimizer and schedule, checkpoints, logging, stop requests."""
