# Images for the containerlab topologies in containerlab/ (docs/lab.md).
# Needs a Docker engine; machines without one run the same topology files
# with `l3fabric lab deploy` on network namespaces instead.
#
#   docker build -t l3fabric/node:latest .              # the l3fabric node (default)
#   docker build --target bird -t l3fabric/bird:2 .     # BIRD 2 for reflectors and leaves
#
# The FRR spines use the upstream quay.io/frrouting/frr image.

FROM debian:bookworm-slim AS bird
RUN apt-get update \
 && apt-get install -y --no-install-recommends bird2 iproute2 procps \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/bird
ENTRYPOINT ["bird", "-f", "-c", "/etc/bird/bird.conf", "-s", "/run/bird/bird.ctl"]

FROM debian:bookworm-slim AS node
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv iproute2 procps \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY l3fabric ./l3fabric
COPY bird-templates ./bird-templates
COPY exabgp-conf ./exabgp-conf
RUN python3 -m venv /opt/l3fabric \
 && /opt/l3fabric/bin/pip install --no-cache-dir . \
 && mkdir -p /etc/l3fabric /var/lib/l3fabric
# ExaBGP is found on PATH by the agent.
ENV PATH=/opt/l3fabric/bin:$PATH
WORKDIR /
ENTRYPOINT ["l3fabric", "agent", "--config", "/etc/l3fabric/node.yaml"]
