"""One ROS bag opened with ``rosbags``, each topic's messages typed by that topic's own
message definition.

``rosbags.highlevel.AnyReader`` builds one type store from the definitions of every topic in
the bag when it opens, and refuses the whole bag when one of them cannot be used: a
rosserial topic records no definition beside its type's real md5sum ("hash mismatch"), a
custom message names a type the bag does not define ("Type ... is unknown"), two topics
define one type differently. A camera topic beside such a topic could not be read at all.
:class:`BagReader` reads the same files with ``rosbags``' ROS 1 and ROS 2 readers and types
the topics it is asked for alone (:meth:`BagReader.check`), so another topic's definition
does not matter. A definition that is absent or empty (ROS 2 bags before Iron store none; a
rosserial topic) is taken from the standard types: Humble's for ROS 2 bags (as AnyReader's
default type store), Noetic's for ROS 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._optional import require


def _rosbags(module: str) -> Any:
    return require(f"rosbags.{module}", extra="ros", purpose="reading ROS bags")


class BagReader:
    """A ROS 1 ``.bag`` file, or a ROS 2 bag (its folder, or its one ``.db3``/``.mcap``
    file): :attr:`connections`, :meth:`messages` and :meth:`deserialize` as AnyReader's.
    :meth:`open` (or ``with``) raises ``rosbags``' own reader error for a damaged bag."""

    def __init__(self, path: Path) -> None:
        self.is2 = path.suffix != ".bag"  # (AnyReader's test)
        module = _rosbags("rosbag2" if self.is2 else "rosbag1")
        self._reader = module.Reader(path)
        self._stores: dict[Any, Any] = {}

    def open(self) -> None:
        self._reader.open()

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connections(self) -> list[Any]:
        return self._reader.connections

    def messages(self, connections: list[Any]) -> Any:
        """``(connection, record time ns, raw bytes)`` of the messages of ``connections``, in
        record-time order."""
        return self._reader.messages(connections=connections)

    def check(self, connections: list[Any]) -> None:
        """Type ``connections`` now, so that a definition ``rosbags`` cannot use is found
        before any message is read (raises what ``rosbags`` raised)."""
        for connection in connections:
            self._store(connection)

    def deserialize(self, raw: bytes, connection: Any) -> Any:
        store = self._store(connection)
        if self.is2:
            return store.deserialize_cdr(raw, connection.msgtype)
        return store.deserialize_ros1(raw, connection.msgtype)

    def _store(self, connection: Any) -> Any:
        key = (connection.msgtype, connection.msgdef)
        if key not in self._stores:
            self._stores[key] = _typestore(connection, self.is2)
        return self._stores[key]


def _typestore(connection: Any, is2: bool) -> Any:
    """A type store holding ``connection``'s message type, from its stored definition (the
    standard one when it stores none)."""
    interfaces, typesys = _rosbags("interfaces"), _rosbags("typesys")
    kind = interfaces.MessageDefinitionFormat
    definition = connection.msgdef
    if definition.format == kind.NONE or not definition.data.strip():
        standard = typesys.Stores.ROS2_HUMBLE if is2 else typesys.Stores.ROS1_NOETIC
        store = typesys.get_typestore(standard)
        if connection.msgtype not in store.types:
            raise ValueError(f"the bag stores no definition of {connection.msgtype}, and it is "
                           f"not a standard type")
        return store
    if definition.format == kind.MSG:
        types = typesys.get_types_from_msg(definition.data, connection.msgtype)
    else:  # IDL: one definition, or several, each after a separator and "IDL: <name>"
        separator = "=" * 80 + "\n"
        parts = ([part.split("\n", 1)[1] for part in definition.data.split(separator)[1:]]
                 if definition.data.startswith(f"{separator}IDL: ") else [definition.data])
        types = {}
        for idl in parts:
            types.update(typesys.get_types_from_idl(idl))
    store = typesys.get_typestore(typesys.Stores.EMPTY)
    store.register(types)
    if connection.msgtype not in store.types:
        raise ValueError(f"its definition does not define {connection.msgtype}")
    store.generate_msgdef(connection.msgtype, 2 if is2 else 1)  # every field's type defined?
    return store
