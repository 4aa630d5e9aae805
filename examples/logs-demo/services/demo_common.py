"""What every demo service shares: finding another service by its Mesos-DNS
SRV record (never by address), a tiny HTTP server on $PORT0, and counters
served as Prometheus text on /metrics."""

import json
import os
import random
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dns.resolver

DOMAIN = os.environ.get("DEMO_DOMAIN", "mesos")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def srv(app, group="demo", port_name=None):
    """(host, port) of one up task of /group/app, from the node's DNS."""
    name = f"_{app}-{group}._tcp.marathon.{DOMAIN}."
    if port_name:
        name = f"_{port_name}." + name
    answers = list(dns.resolver.resolve(name, "SRV", lifetime=3))
    rec = random.choice(answers)
    target = str(rec.target).rstrip(".")
    host = socket.gethostbyname(target)
    return host, rec.port


class Counters:
    def __init__(self, prefix):
        self.prefix = prefix
        self.values = {}
        self.lock = threading.Lock()

    def inc(self, name, by=1):
        with self.lock:
            self.values[name] = self.values.get(name, 0) + by

    def text(self):
        with self.lock:
            return "".join(
                f"# TYPE {self.prefix}_{k} counter\n{self.prefix}_{k} {v}\n" for k, v in sorted(self.values.items())
            )


class Handler(BaseHTTPRequestHandler):
    """Routes to `self.routes[(method, path)]`; each returns (status, type, body)."""

    routes = {}
    counters = None

    def log_message(self, fmt, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _serve(self, method):
        path, _, query = self.path.partition("?")
        if path == "/health":
            return self.reply(200, "text/plain", b"ok\n")
        if path == "/metrics" and self.counters is not None:
            return self.reply(200, "text/plain; version=0.0.4", self.counters.text().encode())
        route = self.routes.get((method, path))
        if route is None:
            return self.reply(404, "application/json", json.dumps({"message": f"no route {method} {path}"}).encode())
        try:
            status, ctype, body = route(self, query)
        except Exception as e:  # an answer for the client rather than a dropped connection
            log(f"{method} {path}: {e!r}")
            status, ctype, body = 503, "application/json", json.dumps({"message": str(e)}).encode()
        self.reply(status, ctype, body)

    def reply(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")


def serve(routes, counters):
    port = int(os.environ["PORT0"])
    handler = type("H", (Handler,), {"routes": routes, "counters": counters})
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("0.0.0.0", port), handler)
    log(f"listening on :{port}")
    server.serve_forever()
