"""The log shipper: receives log lines over HTTP (POST /log, one line per
body line) on $PORT0 and as syslog datagrams on UDP $PORT1, queues them and
sends them in batches to the indexer, found by its SRV record, retrying
until the indexer takes them (so lines sent while the indexer or the store
moves are not lost while this shipper lives)."""

import json
import os
import socket
import threading
import time
import urllib.request

import demo_common as c

MAX_QUEUED = 100_000
counters = c.Counters("demo_shipper")
queue = []
cond = threading.Condition()


def enqueue(source, lines):
    with cond:
        for line in lines:
            line = line.strip()
            if line and len(queue) < MAX_QUEUED:
                queue.append({"source": source, "line": line})
                counters.inc("lines_received_total")
        cond.notify()


def http_log(handler, _query):
    text = handler.body().decode("utf-8", "replace")
    enqueue(handler.client_address[0], text.splitlines())
    return 202, "application/json", json.dumps({"queued": True}).encode()


def syslog():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", int(os.environ["PORT1"])))
    while True:
        data, (addr, _) = sock.recvfrom(65535)
        enqueue(addr, data.decode("utf-8", "replace").splitlines())


def sender():
    while True:
        with cond:
            while not queue:
                cond.wait()
            batch = queue[:500]
        try:
            host, port = c.srv("indexer")
            req = urllib.request.Request(
                f"http://{host}:{port}/index",
                data=json.dumps(batch).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(req, timeout=5).read()
        except Exception as e:
            counters.inc("send_errors_total")
            c.log(f"indexer not reachable ({e}); retrying")
            time.sleep(1)
            continue
        with cond:
            del queue[: len(batch)]
        counters.inc("lines_shipped_total", len(batch))


threading.Thread(target=syslog, daemon=True).start()
threading.Thread(target=sender, daemon=True).start()
c.serve({("POST", "/log"): http_log}, counters)
