# spikefuse: the demo launch (synthetic IMU -> fusion core -> console actuator).
#   docker build -t spikefuse .
#   docker run --rm spikefuse                       # launch/demo.yaml --duration 10
#   docker run --rm spikefuse launch/demo.yaml      # until stopped (docker stop = SIGTERM)
FROM python:3.11-slim

# a C compiler for the Cython engine
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/spikefuse
COPY . .

# installed exactly as the README says (tests/test_dockerfile.py checks this)
RUN pip install .

ENV SPIKEFUSE_RUN_DIR=/run/spikefuse
STOPSIGNAL SIGTERM
ENTRYPOINT ["spikefuse", "launch"]
CMD ["launch/demo.yaml", "--duration", "10"]
