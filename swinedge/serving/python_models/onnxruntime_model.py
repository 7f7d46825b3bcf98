"""Triton Python-backend model written by ``swinedge serve-repo --onnx-backend python``:
runs ``model.onnx`` beside this file with ONNX Runtime on the CPU, for servers built
without Triton's onnxruntime backend. Graphs with Q/DQ nodes run with ONNX Runtime's
basic optimizations, as ``swinedge verify`` runs them (the reference TensorRT is held
to). Requests that arrive together are run as one batch.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "onnxruntime.json")) as f:
            record = json.load(f)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if record["basic_optimizations"]:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if record.get("threads"):
            opts.intra_op_num_threads = int(record["threads"])
        self.session = ort.InferenceSession(os.path.join(here, "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.input_name = record["input"]
        self.output_names = list(record["outputs"])

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        outputs = self.session.run(self.output_names, {self.input_name: np.concatenate(inputs)})
        responses, start = [], 0
        for x in inputs:
            end = start + x.shape[0]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, np.ascontiguousarray(o[start:end])) for n, o in zip(self.output_names, outputs)]))
            start = end
        return responses
