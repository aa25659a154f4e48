"""The place index and its on-disk map (hnswlib + numpy; no torch).

>>> from vpr_edge.index import PlaceIndex, IndexSettings, PlaceMatch, PlaceRecord
"""

from .place_index import PlaceIndex
from .results import PlaceMatch, PlaceRecord
from .settings import IndexSettings

__all__ = ["IndexSettings", "PlaceIndex", "PlaceMatch", "PlaceRecord"]
