"""Serving swinedge artifacts with NVIDIA Triton Inference Server.

``repository``: writes a Triton model repository from plans, ONNX graphs and their
manifests (configs built as Triton's own ``model_config`` protobuf and validated);
``python_models``: the Python-backend models it copies in (image preprocessing, top-k,
ONNX Runtime on CPU); ``server``: starts a real ``tritonserver`` on loopback (the one the
``nvidia-pytriton`` wheel bundles) for tests and the load benchmark; ``python_env``: the
Python environment that server's Python backend runs in.
"""
