"""Event-driven attitude estimation (gravity direction; with a magnetometer also magnetic
north, hence heading): graph generator
(:mod:`.generate`), runners (:mod:`.run`), scoring against ground truth / VQF
(:mod:`.evaluate`), quaternion helpers (:mod:`.quat`) and status checks (:mod:`.status`).

Import from the submodules, e.g. ``from spikefuse.attitude.generate import
build_attitude_graph`` (this package imports nothing eagerly, so ``python -m
spikefuse.attitude.generate`` runs cleanly)."""
