#!/usr/bin/env python3
"""Holds N Server-Sent-Events clients on one mnistd job; used by tests/system/test_load.sh.

  sse_clients.py --port P --job K [--clients 200] [--max-seconds 300]
                 [--ready FILE] --out FILE

Each client is a raw HTTP/1.1 connection (Accept: text/event-stream) that
reads continuously, decodes the chunked body, and parses the events. The
script writes FILE (JSON) when every client has seen `end` and the stream
closed, or at --max-seconds; --ready FILE is created once every client has
its 200 response headers. Bounded: every wait has a deadline.
"""
import argparse
import asyncio
import json
import os
import time


class Client:
    def __init__(self):
        self.status = None
        self.events = {}
        self.ids = []
        self.end = None
        self.closed_clean = False
        self.error = None
        self.bytes = 0
        self.t_headers = None
        self.t_end = None


def parse_events(text, c):
    """Feeds complete SSE frames (separated by a blank line) into c; returns the rest."""
    while "\n\n" in text:
        frame, text = text.split("\n\n", 1)
        ev = {}
        for line in frame.split("\n"):
            if line.startswith(":"):
                ev.setdefault("comment", 0)
                continue
            k, _, v = line.partition(": ")
            ev[k] = v
        if "event" not in ev:
            c.events["heartbeat"] = c.events.get("heartbeat", 0) + 1
            continue
        c.events[ev["event"]] = c.events.get(ev["event"], 0) + 1
        if "id" in ev:
            c.ids.append(int(ev["id"]))
        if ev["event"] == "end":
            c.end = json.loads(ev.get("data", "null"))
            c.t_end = time.time()
    return text


async def run_client(port, job, c, ready, deadline):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        w.write(("GET /v1/jobs/%d/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                 "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n" % (job, port)).encode())
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 15)
        c.status = int(head.split(b" ", 2)[1])
        c.t_headers = time.time()
        chunked = b"transfer-encoding: chunked" in head.lower()
        ready.append(1)
        text = ""
        while True:
            left = deadline - time.time()
            if left <= 0:
                c.error = "deadline"
                break
            if chunked:
                line = await asyncio.wait_for(r.readuntil(b"\r\n"), left)
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    c.closed_clean = True
                    break
                data = await asyncio.wait_for(r.readexactly(n + 2), left)
                data = data[:-2]
            else:
                data = await asyncio.wait_for(r.read(65536), left)
                if not data:
                    c.closed_clean = True
                    break
            c.bytes += len(data)
            text = parse_events(text + data.decode(), c)
        w.close()
    except asyncio.IncompleteReadError:
        c.error = "connection closed mid-stream"
    except Exception as e:  # noqa: BLE001 - reported, not raised
        c.error = "%s: %s" % (type(e).__name__, e)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--job", type=int, required=True)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--ready")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    t0 = time.time()
    deadline = t0 + a.max_seconds
    clients = [Client() for _ in range(a.clients)]
    ready = []
    tasks = [asyncio.create_task(run_client(a.port, a.job, c, ready, deadline)) for c in clients]
    if a.ready:
        while len(ready) + sum(1 for c in clients if c.error) < a.clients and time.time() < t0 + 30:
            await asyncio.sleep(0.05)
        with open(a.ready, "w") as f:
            f.write("%d %.2f\n" % (len(ready), time.time() - t0))
    await asyncio.wait(tasks, timeout=max(1, deadline - time.time() + 5))
    ids_ok = sum(1 for c in clients if c.ids and c.ids == sorted(set(c.ids)))
    types = {}
    for c in clients:
        for k, v in c.events.items():
            types.setdefault(k, []).append(v)
    ends = [c.end["state"] for c in clients if c.end]
    res = {
        "clients": a.clients,
        "status_200": sum(1 for c in clients if c.status == 200),
        "with_events": sum(1 for c in clients if c.ids),
        "with_epoch_events": sum(1 for c in clients if c.events.get("epoch")),
        "saw_end": len(ends),
        "end_states": sorted(set(ends)),
        "closed_after_end": sum(1 for c in clients if c.end and c.closed_clean),
        "ids_increasing": ids_ok,
        "events_min": min((len(c.ids) for c in clients), default=0),
        "events_max": max((len(c.ids) for c in clients), default=0),
        "per_type_min": {k: min(v) if len(v) == a.clients else 0 for k, v in types.items()},
        "bytes_total": sum(c.bytes for c in clients),
        "errors": sorted({c.error for c in clients if c.error}),
        "n_errors": sum(1 for c in clients if c.error),
        "end_spread_s": round(max(c.t_end for c in clients if c.t_end) - min(c.t_end for c in clients if c.t_end), 3) if ends else None,
        "seconds": round(time.time() - t0, 2),
    }
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    asyncio.run(main())
