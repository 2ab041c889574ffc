"""ONNX files in, ONNX files out: export, optimization, the FP16 and INT8 models, rewrites for TensorFlow, graph facts."""
