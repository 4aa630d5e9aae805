"""The viewer: a search page over the store's full-text index. GET / is the
page, GET /search?q=WORDS the results as HTML, GET /api/search?q=WORDS as
JSON ({"query", "hits": [{"received", "source", "line"}]}). It finds the
store by its SRV record."""

import html
import json
import urllib.parse

import psycopg2

import demo_common as c

counters = c.Counters("demo_viewer")
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Wharf demo: logs</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:0 1em 0 0;font-family:monospace}}</style></head>
<body><h1>Logs</h1><form action="/search"><input name="q" value="{q}" autofocus>
<button>Search</button></form>{results}</body></html>"""


def search(words):
    host, port = c.srv("store")
    with psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres", connect_timeout=3) as db:
        with db.cursor() as cur:
            try:
                cur.execute(
                    "SELECT received, source, line FROM logs WHERE tsv @@ plainto_tsquery('simple', %s)"
                    " ORDER BY id DESC LIMIT 100",
                    (words,),
                )
            except psycopg2.errors.UndefinedTable:
                return []  # nothing indexed yet
            rows = cur.fetchall()
    counters.inc("searches_total")
    return [{"received": r[0].isoformat(), "source": r[1], "line": r[2]} for r in rows]


def query_of(query):
    return urllib.parse.parse_qs(query).get("q", [""])[0]


def page(_handler, _query):
    return 200, "text/html; charset=utf-8", PAGE.format(q="", results="").encode()


def html_search(_handler, query):
    q = query_of(query)
    hits = search(q)
    rows = "".join(
        f"<tr><td>{html.escape(h['received'])}</td><td>{html.escape(h['source'])}</td>"
        f"<td>{html.escape(h['line'])}</td></tr>"
        for h in hits
    )
    results = f"<p>Matches: {len(hits)}</p><table>{rows}</table>"
    return 200, "text/html; charset=utf-8", PAGE.format(q=html.escape(q), results=results).encode()


def api_search(_handler, query):
    q = query_of(query)
    return 200, "application/json", json.dumps({"query": q, "hits": search(q)}).encode()


c.serve({("GET", "/"): page, ("GET", "/search"): html_search, ("GET", "/api/search"): api_search}, counters)
