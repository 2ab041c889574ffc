"""crossdeploy: PyTorch image classifier -> ONNX -> INT8 -> TensorFlow / TFLite / TensorRT, parity-checked.

Importing the package imports no framework: torch, onnxruntime, tensorflow and TensorRT are loaded
only by the modules that use them, so a CPU install never needs GPU packages.
"""

__version__ = "0.1.0"
