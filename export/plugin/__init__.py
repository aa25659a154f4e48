"""The fused NetVLAD plugin ``vpr_edge::NetVLAD`` (see README.md in this folder).

- :mod:`.kernel`: the Triton kernel (runs on a GPU, or on the CPU with ``TRITON_INTERPRET=1``);
- :mod:`.aot`: ahead-of-time compilation of the kernel to PTX, no GPU needed;
- :mod:`.onnx_node`: the plugin graph (the NetVLAD subgraph as one node);
- :mod:`.ort_custom_op`: the same node in ONNX Runtime on the CPU (onnxruntime-extensions);
- :mod:`.registration`: the TensorRT registration (``tensorrt.plugin``, TensorRT >= 10.9).

Nothing is imported here: triton, onnx and tensorrt are loaded by the module that needs them.
"""

from __future__ import annotations

import importlib.util


def plugin_available() -> tuple[bool, str]:
    """(available, reason) for ``vpr-export --plugin``: writing and validating the plugin
    graph needs onnx and onnxruntime-extensions (the ``export`` extra)."""
    missing = [name for name in ("onnx", "onnxruntime_extensions")
               if importlib.util.find_spec(name) is None]
    if missing:
        from vpr_edge._optional import install_command

        return False, (f"{' and '.join(missing)} not installed: the vpr-edge[export] "
                       f"extra, {install_command('export')}")
    return True, "plugin graph: onnx + onnxruntime-extensions"
