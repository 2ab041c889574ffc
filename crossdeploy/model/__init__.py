"""The source model: architectures and weights, the user's checkpoint, the model card, the exported program and its size."""
