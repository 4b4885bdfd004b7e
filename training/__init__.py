"""Training side: data loaders, simulator, training, evaluation, distillation, ONNX export."""
