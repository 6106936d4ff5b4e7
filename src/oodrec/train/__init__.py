"""Training: losses, the sampler-agnostic loop, checkpoints and run directories."""
