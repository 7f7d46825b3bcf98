"""Defaults shared by the library and the CLI (kept import-light: no torch, no onnx)."""

# INT8/FP8: FasterTransformer's recipe (LayerNorm, softmax and residual adds unquantized).
# FP16: only the reductions that overflow in half precision; the residual stream runs in
# FP16 as in mixed-precision inference, so Linear bias adds need no casts around them.
DEFAULT_KEEP_HIGH_PRECISION = ("LayerNormalization", "Softmax", "Add")
DEFAULT_KEEP_FP32_FOR_FP16 = ("LayerNormalization", "Softmax")

# `verify` pass thresholds (--max-top1-drop / --min-cosine).
MAX_TOP1_DROP = 0.5
MIN_COSINE = 0.99
