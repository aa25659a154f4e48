"""The metadata of a plugin graph (``NAME.plugin.onnx``: NetVLAD as the ``vpr_edge::NetVLAD``
node), which ONNX Runtime cannot load, is read from the file's bytes: ``vpr-edge info``
describes it and ``vpr-edge engine build`` names the way to build its engine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vpr_edge.cli import main
from vpr_edge.errors import ModelFormatError
from vpr_edge.metadata import (
    ONNX_METADATA_KEY,
    PluginInfo,
    onnx_metadata_props,
    read_onnx_metadata,
)


def plugin_graph(make_model, tiny, name: str, *, plugin: bool = True) -> Path:
    """The tiny model with its MatMul as the plugin node, as ``vpr-export --plugin`` writes
    NetVLAD (``plugin``: its metadata names the plugin, as vpr-export's does)."""
    onnx = pytest.importorskip("onnx")
    meta = replace(tiny.metadata(), plugin=PluginInfo("NetVLAD", "1")) if plugin else None
    path = make_model(name, meta=meta if plugin else ...)
    model = onnx.load(str(path))
    for i, node in enumerate(model.graph.node):
        if node.op_type == "MatMul":
            model.graph.node[i].CopyFrom(onnx.helper.make_node(
                "NetVLAD", list(node.input), list(node.output), domain="vpr_edge"))
    model.opset_import.append(onnx.helper.make_opsetid("vpr_edge", 1))
    onnx.save(model, str(path))
    return path


def test_a_plugin_graphs_metadata_is_read(make_model, tiny) -> None:
    path = plugin_graph(make_model, tiny, "m.plugin.onnx")
    meta = read_onnx_metadata(str(path))
    assert meta.plugin == PluginInfo("NetVLAD", "1")
    assert meta.fingerprint == tiny.metadata().fingerprint  # (the plugin changes no descriptor)


def test_a_graph_onnx_runtime_cannot_load_still_needs_plugin_metadata(make_model,
                                                                      tiny) -> None:
    path = plugin_graph(make_model, tiny, "m.onnx", plugin=False)
    with pytest.raises(ModelFormatError, match="plugin graph"):
        read_onnx_metadata(str(path))


def test_info_describes_a_plugin_graph(make_model, tiny, capsys) -> None:
    path = plugin_graph(make_model, tiny, "m.plugin.onnx")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "NetVLAD v1" in out and tiny.metadata().fingerprint in out


def test_engine_build_names_the_plain_graph_for_a_plugin_graph(make_model, tiny,
                                                               capsys) -> None:
    path = plugin_graph(make_model, tiny, "m.plugin.fp16.onnx")
    assert main(["engine", "build", str(path)]) == 2
    err = capsys.readouterr().err
    assert "vpr-export CHECKPOINT --plugin --engine" in err
    assert "(m.fp16.onnx)" in err  # the plain graph beside it, not the plugin graph again


def test_metadata_props_are_read_from_the_wire_format(tiny_onnx: Path, tiny) -> None:
    onnx = pytest.importorskip("onnx")
    data = tiny_onnx.read_bytes()
    props = onnx_metadata_props(data)
    assert props == {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    assert props[ONNX_METADATA_KEY] == tiny.metadata().to_json()
    with pytest.raises(ModelFormatError, match="not an ONNX file"):
        onnx_metadata_props(data[:-3])  # (the last entry runs past the end)
