"""Sensor drivers shipped with spikefuse (installed as ``spikefuse.drivers``).

``KINDS`` maps each ``spikefuse driver KIND`` name to the ``module:attr`` of its
:class:`~spikefuse.sdk.DriverSpec`; modules are imported only when their kind is run.
"""

from types import MappingProxyType

KINDS = MappingProxyType(
    {
        "imu": "spikefuse.drivers.imu:IMU",
        "camera": "spikefuse.drivers.camera:CAMERA",
        "event_camera": "spikefuse.drivers.event_camera:EVENT_CAMERA",
        "sim": "spikefuse.drivers.sim:SIM",
    }
)
