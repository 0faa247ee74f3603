# Test-only stand-in for prom/prometheus (this machine reaches no container registry), built on
# the Debian base that ../shared/docker/standins.sh makes, with Debian's prometheus package.
# It mimics what docker-compose.yml relies on in the official image: the binary at
# /bin/prometheus as entrypoint, the user nobody, the data directory /prometheus, and a wget
# for the health check (busybox's in the official image).
ARG BASE_IMAGE=local/bookworm-base:latest
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus wget \
        >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && mkdir -p /prometheus /etc/prometheus \
 && chown nobody:nogroup /prometheus \
 && test -x /bin/prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
