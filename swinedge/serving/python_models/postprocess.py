"""Triton Python-backend model written by ``swinedge serve-repo``: a classifier's logits
-> its top k classes: ``labels`` (the class names in ``postprocess.json``, or the class
index as text where the model has none), softmax ``scores`` and ``class_ids``. Ties go
to the lower class index, as in ``numpy.argmax``. Needs only NumPy.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "postprocess.json")) as f:
            record = json.load(f)
        self.input_name, self.k = record["input"], int(record["top_k"])
        names = record.get("labels") or [str(i) for i in range(int(record["classes"]))]
        self.names = np.array([n.encode("utf-8") for n in names], dtype=np.object_)

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy().astype(np.float32)
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = shifted / shifted.sum(axis=1, keepdims=True)
            top = np.argsort(-logits, axis=1, kind="stable")[:, : self.k]
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("labels", self.names[top]),
                        pb_utils.Tensor("scores", np.take_along_axis(probs, top, axis=1).astype(np.float32)),
                        pb_utils.Tensor("class_ids", top.astype(np.int64)),
                    ]
                )
            )
        return responses
