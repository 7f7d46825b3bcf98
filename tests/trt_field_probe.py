"""A probe plugin (swinedge's test code) registered through NVIDIA's ``tensorrt.plugin``:
its shape function records the attribute values NVIDIA's layer decoded from the plugin
fields, so a test sees what a plugin receives from fields that libnvinfer (here: our
harness, as the ONNX parser would) hands the compiled ``createPlugin`` trampoline.

No ``from __future__ import annotations`` here: NVIDIA's validators need real annotation
objects (see ``swinedge/plugin/tensorrt_plugin.py``).
"""

from typing import Tuple, Union

import numpy as np
import numpy.typing as npt
import tensorrt.plugin as trtp

PROBE_ID = "swinedge_probe::fields"
SEEN: list = []


@trtp.register(PROBE_ID)
def _fields_desc(
    x: trtp.TensorDesc,
    ints: npt.NDArray[np.int32],
    floats: npt.NDArray[np.float32],
    text: str,
    one: npt.NDArray[np.int32],
) -> trtp.TensorDesc:
    SEEN.append({"ints": np.asarray(ints).tolist(), "floats": np.asarray(floats).tolist(), "text": text, "one": np.asarray(one).tolist()})
    return x.like()


@trtp.aot_impl(PROBE_ID)
def _fields_aot(
    x: trtp.TensorDesc,
    ints: npt.NDArray[np.int32],
    floats: npt.NDArray[np.float32],
    text: str,
    one: npt.NDArray[np.int32],
    outputs: Tuple[trtp.TensorDesc],
    tactic: int,
) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
    raise NotImplementedError("the probe is never built")
