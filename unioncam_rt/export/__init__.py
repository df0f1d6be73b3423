"""Export: zoo model -> ONNX graphs (features with explicit gradients, masked scoring),
TensorRT engines and a manifest. Not implemented yet (see the README's status)."""
