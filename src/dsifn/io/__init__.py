"""Files: checkpoints and safe writing."""
