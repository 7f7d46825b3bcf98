"""swinedge: Swin Transformers from PyTorch checkpoints to verified TensorRT engines."""

__version__ = "0.1.0"
