#!/bin/sh
# The store: PostgreSQL on $PORT0, reachable from the other services (trust
# authentication: a demo on a private network), data in the container.
set -eu
bin=/usr/lib/postgresql/15/bin
data=/var/lib/postgresql/demo
mkdir -p "$data"
chown postgres:postgres "$data"
chmod 700 "$data"
if [ ! -f "$data/PG_VERSION" ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups "$bin/initdb" -D "$data" -A trust -U postgres --no-sync >/dev/null
    echo "host all all 0.0.0.0/0 trust" >>"$data/pg_hba.conf"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$data" -p "$PORT0" \
    -c listen_addresses='*' -c unix_socket_directories=/tmp \
    -c dynamic_shared_memory_type=mmap -c shared_buffers=16MB -c fsync=off -c jit=off
