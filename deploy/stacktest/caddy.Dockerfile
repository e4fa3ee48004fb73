# Stands in for caddy:2: Debian's caddy with the official image's layout (config in
# /etc/caddy/Caddyfile, state in /data and /config) and wget for the compose health check.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends caddy wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data /config /etc/caddy
ENV XDG_CONFIG_HOME=/config XDG_DATA_HOME=/data
EXPOSE 80 443 443/udp 2019
WORKDIR /srv
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
