"""Export checkpoints to ONNX and TensorRT engines (needs the `export` extra)."""
