"""Training, evaluation and inference over the model layer (what the `gscnn` command runs)."""
