"""TensorRT registration of the fused window-attention plugin (needs TensorRT >= 10.9)."""
