"""Live view of a running launch in a browser (``spikefuse view``, ``spikefuse launch
--view``): Rerun's web viewer, served from the ``rerun-sdk`` wheel on loopback. See
``docs/liveview.md``."""
