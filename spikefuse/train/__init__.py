"""Learn a controller from recordings and convert it to a sigma-delta graph.

Needs the optional extra ``spikefuse[train]`` (JAX, optax). Only :mod:`.config` and
:mod:`.dataset` load without it; the engine, the daemon and the drivers never import this
package."""
