"""The fusion graph on SpiNNaker through PyNN/sPyNNaker (``core: {backend: spinnaker}``).

* :mod:`.plan` compiles a built :class:`~spikefuse.builder.Model` to +/- pairs of
  integrate-and-fire neurons (NumPy only) and names every node that cannot map;
* :mod:`.pynn` builds that network on ``pyNN.spiNNaker`` or ``pyNN.nest``;
* :mod:`.toolchain` keeps sPyNNaker's cfg and reports in the backend's folder and maps on
  a virtual board; :mod:`.nest_check` runs the same network on NEST against the engine;
* :mod:`.eieio` turns bus counts into EIEIO spike packets; :mod:`.runner` is the engine
  API the daemon drives.

See docs/spinnaker.md. Only :mod:`.config` is imported by the core's config (no toolchain).
"""
