"""TensorRT engines: what an engine was built for (engine_key), how it is built (build), which engine a
variant runs, the pipeline's or one built here (engines), and CUDA plumbing (cuda)."""
