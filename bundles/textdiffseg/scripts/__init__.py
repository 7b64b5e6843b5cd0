"""TextDiffSeg bundle code that a config cannot say (network wiring, text conditioning, training step)."""
