"""TensorRT engines: what an engine was built for (engine_key), how it is built (build), and CUDA plumbing (cuda)."""
