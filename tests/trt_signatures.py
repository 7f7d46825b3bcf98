"""The signatures NVIDIA's compiled bindings of one TensorRT version give the methods
swinedge calls, read from the imported module's ``__doc__`` (pybind11 writes them there
at import; the binary holds no full signature strings).

Run in a fresh process (one TensorRT version per process)::

    echo '[["IExecutionContext", "set_input_shape"], ["Builder", "__init__"]]' | python tests/trt_signatures.py 11.4.0.106

(``["tensorrt", "Builder"]``: a module-level name; a class means its constructor) prints
``{"IExecutionContext.set_input_shape": [{"params": [...], "returns": "bool"}, ...]}``:
one entry per overload, each parameter as ``{"name", "type", "default"}`` (``self``
dropped). A missing class or method is ``null``. With ``--attributes`` it answers
whether attribute chains resolve on the real module, with ``--methods`` which callables
classes bind.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trt_bindings  # noqa: E402

_LINE = re.compile(r"^\s*(?:\d+\.\s+)?(?P<name>\w+)\((?P<params>.*)\)\s*->\s*(?P<returns>.+?)\s*$")


def split_params(text: str) -> list[str]:
    """Top-level commas only: types such as ``Dict[str, int]`` hold commas too."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def parse_signatures(name: str, doc: str | None) -> list[dict]:
    """Every overload of ``name`` in a pybind11 docstring."""
    out = []
    for line in (doc or "").splitlines():
        m = _LINE.match(line)
        if not m or m.group("name") != name or m.group("params") == "*args, **kwargs":
            continue
        params = []
        for p in split_params(m.group("params")):
            head, _, default = p.partition("=")
            pname, _, ptype = head.partition(":")
            params.append({"name": pname.strip(), "type": ptype.strip(), "default": default.strip() or None})
        if params and params[0]["name"] == "self":
            params = params[1:]
        out.append({"params": params, "returns": m.group("returns")})
    return out


def resolves(trt, root: str, chain: list[str]) -> bool:
    """``trt.<chain...>`` (root "tensorrt") or ``<an object of class root>.<chain[0]>``."""
    obj = trt if root == "tensorrt" else getattr(trt, root, None)
    for name in chain:
        if obj is None or not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True


def bound_methods(trt, classes: list[str]) -> dict[str, list[str]]:
    """The public callables each class binds (what a call on it may name)."""
    out = {}
    for name in classes:
        cls = getattr(trt, name, None)
        out[name] = sorted(m for m in dir(cls) if not m.startswith("_") and callable(getattr(cls, m, None))) if cls is not None else []
    return out


def main() -> int:
    version = sys.argv[1]
    trt, _ = trt_bindings.load_tensorrt(version)
    if len(sys.argv) > 2 and sys.argv[2] == "--attributes":
        # stdin: [[root, [name, ...]], ...] -> {"root.name...": bool}
        print(json.dumps({".".join([root, *chain]): resolves(trt, root, chain) for root, chain in json.load(sys.stdin)}))
        return 0
    if len(sys.argv) > 2 and sys.argv[2] == "--methods":
        print(json.dumps(bound_methods(trt, json.load(sys.stdin))))
        return 0
    wanted = json.load(sys.stdin)
    result: dict[str, list | None] = {}
    for cls_name, method in wanted:
        cls = trt if cls_name == "tensorrt" else getattr(trt, cls_name, None)
        fn = getattr(cls, method, None) if cls is not None else None
        name = method
        if cls_name == "tensorrt" and isinstance(fn, type):  # trt.Builder(logger): the constructor
            fn, name = fn.__init__, "__init__"
        result[f"{cls_name}.{method}"] = None if fn is None else parse_signatures(name, getattr(fn, "__doc__", None))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
