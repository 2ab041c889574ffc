"""The TensorFlow side: its quiet import, onnx2tf to SavedModel and TFLite, SavedModels saved reproducibly."""
