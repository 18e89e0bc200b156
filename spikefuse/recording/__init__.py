"""Record and replay spikefuse bus traffic on MCAP, import real robot logs, look at logs.

* :mod:`.mcapio`: :class:`LogWriter`, :func:`open_log` (finished and unfinished files)
* :mod:`.recorder`: :class:`Recorder` (bus -> MCAP), :mod:`.info`: :func:`summarize`
* :mod:`.recover`, :mod:`.offline` (engine on a virtual clock), :mod:`.live` (bus replay)
* :mod:`.importers` (ROS 1/2 bags, PX4 ULog, AEDAT4, CSV/NPZ tables)
* :mod:`.export` (JSON channels for Foxglove), :mod:`.plot` (PNG/HTML report)
"""

from spikefuse.recording.mcapio import LogFile, LogMessage, LogWriter, open_log

__all__ = ["LogFile", "LogMessage", "LogWriter", "open_log"]
