"""Where the fused NetVLAD TensorRT plugin (issue 4) plugs into the exporter.

Until the plugin package exists, ``--plugin`` reports that it is unavailable and the export
stops (never a silent fall back to the plain graph when the user asked for the plugin).
"""

from __future__ import annotations

import importlib.util


def plugin_status() -> tuple[bool, str]:
    """(available, reason) for ``vpr-export --plugin``."""
    if importlib.util.find_spec("vpr_edge.export.plugin") is None:
        return False, ("the fused NetVLAD TensorRT plugin is not part of this vpr-edge "
                       "version yet; export without --plugin (the plain-ops graph runs "
                       "everywhere)")
    from .plugin import plugin_available

    return plugin_available()
