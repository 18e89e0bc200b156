"""``spikefuse agent``: the per-host daemon of a multi-host launch (docs/multihost.md)."""
