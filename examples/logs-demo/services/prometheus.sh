#!/bin/sh
# Prometheus on $PORT0, scraping every Wharf node's /metrics (found through
# the node's DNS: one SRV record per node under _wharf._tcp) and the demo's
# own services (their named "http" ports).
set -eu
d=${DEMO_DOMAIN:-mesos}
cat >/tmp/prometheus.yml <<YML
global:
  scrape_interval: 5s
  evaluation_interval: 5s
scrape_configs:
  - job_name: wharf
    dns_sd_configs:
      - names: ['_wharf._tcp.$d']
        type: SRV
        refresh_interval: 5s
  - job_name: demo
    dns_sd_configs:
      - names: ['_http._shipper-demo._tcp.marathon.$d', '_http._indexer-demo._tcp.marathon.$d', '_http._viewer-demo._tcp.marathon.$d']
        type: SRV
        refresh_interval: 5s
YML
exec prometheus --config.file=/tmp/prometheus.yml --storage.tsdb.path=/tmp/prometheus \
    --web.listen-address=":$PORT0" --storage.tsdb.retention.time=1d
