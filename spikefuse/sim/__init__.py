"""The simulated robot (optional extra ``spikefuse[sim]``, MuJoCo): a differential-drive
robot on a closed track with camera, gyro, accelerometer and wheel encoders, as a library
(:class:`~spikefuse.sim.world.World`); ``drivers/sim.py`` puts it on the bus."""
