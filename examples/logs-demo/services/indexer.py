"""The indexer: takes batches of log lines over HTTP (POST /index, a JSON
list of {"source", "line"}) and writes them into the store, whose full-text
index (a generated tsvector with a GIN index) makes them searchable. It finds
the store by its SRV record on every (re)connection."""

import json
import threading

import psycopg2

import demo_common as c

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    id bigserial PRIMARY KEY,
    received timestamptz NOT NULL DEFAULT now(),
    source text NOT NULL DEFAULT '',
    line text NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', line)) STORED
);
CREATE INDEX IF NOT EXISTS logs_tsv ON logs USING gin (tsv);
"""

counters = c.Counters("demo_indexer")
lock = threading.Lock()
conn = None


def connection():
    global conn
    if conn is None or conn.closed:
        host, port = c.srv("store")
        conn = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres", connect_timeout=3)
        with conn, conn.cursor() as cur:
            cur.execute(SCHEMA)
        c.log(f"connected to the store at {host}:{port}")
    return conn


def index(handler, _query):
    batch = json.loads(handler.body() or b"[]")
    rows = [(str(e.get("source", "")), str(e["line"])) for e in batch if str(e.get("line", "")).strip()]
    global conn
    with lock:
        try:
            db = connection()
            with db, db.cursor() as cur:
                cur.executemany("INSERT INTO logs (source, line) VALUES (%s, %s)", rows)
        except Exception:
            counters.inc("store_errors_total")
            if conn is not None:
                conn.close()
            conn = None
            raise
    counters.inc("lines_indexed_total", len(rows))
    return 200, "application/json", json.dumps({"indexed": len(rows)}).encode()


c.serve({("POST", "/index"): index}, counters)
