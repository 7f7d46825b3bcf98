"""Triton Python-backend model written by ``swinedge serve-repo``: encoded image bytes
(JPEG, PNG, ...) -> the classifier's input, exactly as swinedge preprocesses for
``verify`` (``swinedge_transforms.py`` beside this file is swinedge's own module).

Needs NumPy and Pillow in the server's Python. A request that is not a decodable image,
is empty or is larger than the limits in ``preprocess.json`` gets an INVALID_ARG error
(HTTP 400), and the server goes on serving.
"""

import io
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from swinedge_transforms import transform_from_record


class BadImage(Exception):
    pass


class TritonPythonModel:
    def initialize(self, args):
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "preprocess.json")) as f:
            record = json.load(f)
        self.transform = transform_from_record(record["transform"])
        self.input_name, self.output_name = record["input"], record["output"]
        self.max_bytes, self.max_pixels = int(record["max_image_bytes"]), int(record["max_pixels"])
        self.dtype = np.dtype(record["dtype"])

    def decode(self, index, data):
        from PIL import Image

        if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
            raise BadImage(f"image {index} is empty: send the encoded file's bytes (JPEG, PNG, ...)")
        if len(data) > self.max_bytes:
            raise BadImage(f"image {index} is {len(data)} bytes, over this model's limit of {self.max_bytes}")
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > self.max_pixels:
                    raise BadImage(f"image {index} is {image.width}x{image.height}, over this model's limit of {self.max_pixels} pixels")
                image.load()
                return image.copy()
        except BadImage:
            raise
        except Exception as e:  # Pillow raises many types for broken files
            raise BadImage(f"image {index} does not decode as an image ({type(e).__name__})") from None

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                items = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy().reshape(-1)
                arrays = [self.transform(self.decode(i, item)) for i, item in enumerate(items)]
                batch = np.stack(arrays).astype(self.dtype, copy=False)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, batch)]))
            except BadImage as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)))
        return responses
