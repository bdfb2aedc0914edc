"""Floor 3, training: the loss, the training step and loop, checkpoints to resume from."""
