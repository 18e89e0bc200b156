"""``spikefuse import SRC -o OUT.mcap --map CONFIG``: real robot logs -> spikefuse streams.

Every sampled signal goes through the same encoder as the live drivers
(:class:`~spikefuse.encoding.SigmaDeltaEncoder`, :class:`~spikefuse.encoding.DvsEncoder`),
one EventBatch per sample and group that changed (the drivers' batching with
``max_batch_latency_ms: 0``), numbered per stream. Native event-camera events (AEDAT4) are
passed through as ±1 counts, batched per ``window_ms``.

Sources: ROS 1/2 bags (``rosbags``), PX4 ULog (``pyulog``), AEDAT4 (``aedat``), CSV/NPZ
tables (:mod:`spikefuse.tables`). See :mod:`.config` for the ``--map`` file.
"""

from spikefuse.recording.importers.config import GroupMap, ImportMap, StreamMap, load_import_map
from spikefuse.recording.importers.run import ImportResult, detect_format, import_log

__all__ = [
    "GroupMap",
    "ImportMap",
    "ImportResult",
    "StreamMap",
    "detect_format",
    "import_log",
    "load_import_map",
]
