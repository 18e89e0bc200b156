# spikefuse: the main job (simulated robot -> fusion core -> sim actuator, one lap).
#   docker build -t spikefuse .
#   docker run --rm spikefuse                       # launch/sim.yaml (one lap, then stops)
#   docker run --rm spikefuse launch/demo.yaml      # until stopped (docker stop = SIGTERM)
# The final image carries the EGL/Mesa libraries for MuJoCo's headless renderer
# (MUJOCO_GL=egl, CPU rendering through llvmpipe; no GPU needed).
#
# The examples that read real recordings (README "More to run", launch/imu_gimbal.yaml)
# expect ../shared/data next to the repository, i.e. /opt/shared/data in the image. Mount
# your copy there, read-only, and a writable folder for outputs:
#   docker run --rm -v "$PWD/../shared/data:/opt/shared/data:ro" spikefuse \
#       launch/imu_gimbal.yaml --duration 60
#   docker run --rm -v "$PWD/../shared/data:/opt/shared/data:ro" -v "$PWD/out:/out" \
#       --entrypoint spikefuse spikefuse eval attitude \
#       ../shared/data/broad/broad_02_undisturbed_slow_rotation.csv.gz --plot /out/attitude.png
# (the container runs as the unprivileged user 'spikefuse', uid 10001: /out must be
# writable by it, e.g. mkdir out && chmod 777 out, or add --user "$(id -u):$(id -g)")

# ---- build stage: a C compiler for the Cython engine; builds the spikefuse wheel (and
# wheels of its dependencies) from the repository root, then installs it into a venv
FROM python:3.11-slim AS build

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[sim]" \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels "spikefuse[sim]"

# ---- final image: the venv only (no compiler, no source tree, no wheels), run as a
# non-root user
FROM python:3.11-slim

COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# runtime libraries only: EGL + Mesa (llvmpipe) for MuJoCo's renderer
RUN apt-get update \
    && apt-get install -y --no-install-recommends libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin spikefuse \
    && mkdir -p /run/spikefuse /opt/spikefuse \
    && chown spikefuse:spikefuse /run/spikefuse /opt/spikefuse

WORKDIR /opt/spikefuse
# the launch files and the configs they name (paths relative to each file)
COPY --chown=spikefuse:spikefuse launch/ launch/
COPY --chown=spikefuse:spikefuse configs/ configs/

USER spikefuse
ENV SPIKEFUSE_RUN_DIR=/run/spikefuse
STOPSIGNAL SIGTERM
ENTRYPOINT ["spikefuse", "launch"]
CMD ["launch/sim.yaml", "--duration", "120"]
