#!/usr/bin/env python3
"""Idle / slow connections against mnistd; used by tests/system/test_load.sh.

  slowloris.py --port P [--conns 2000] [--timeout 5] [--grace 5] [--probes 5]
               [--trickle 0] [--ready FILE] --out FILE

Opens --conns TCP connections to 127.0.0.1:P: a third send nothing, a third
a partial request line ("GET /hea"), a third a request line and one header
but never the blank line. While they are all open it measures fresh
GET /healthz requests (--probes, each on a new connection). Then it waits
until --timeout + --grace seconds after the last connection was opened and
records, per socket, when the server closed it (EOF or reset).
--trickle N adds N connections that send one header byte every
timeout*0.6 s, to see whether trickling defeats the idle timeout.
Writes JSON to FILE. Everything is bounded by explicit deadlines.
"""
import argparse
import json
import os
import selectors
import socket
import time

MODES = [b"", b"GET /hea", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"]


def probe(port, timeout=5.0):
    t = time.time()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        buf = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            buf += d
        s.close()
        code = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/") else 0
    except OSError as e:
        return {"code": 0, "seconds": round(time.time() - t, 4), "error": str(e)}
    return {"code": code, "seconds": round(time.time() - t, 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--grace", type=float, default=5)
    ap.add_argument("--probes", type=int, default=5)
    ap.add_argument("--trickle", type=int, default=0)
    ap.add_argument("--ready", help="file created once every connection is open")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sel = selectors.DefaultSelector()
    socks, opened, closed, how, connect_errors = [], {}, {}, {}, []
    t0 = time.time()
    for i in range(a.conns + a.trickle):
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
        except OSError as e:
            connect_errors.append(str(e))
            continue
        trickle = i >= a.conns
        payload = b"GET /healthz HTTP/1.1\r\n" if trickle else MODES[i % 3]
        if payload:
            s.sendall(payload)
        s.setblocking(False)
        opened[s] = time.time()
        sel.register(s, selectors.EVENT_READ, trickle)
        socks.append(s)
    t_open = time.time()
    if a.ready:
        with open(a.ready, "w") as f:
            f.write("%d\n" % len(socks))
    res = {"requested": a.conns, "trickle_requested": a.trickle, "opened": len(socks),
           "connect_errors": len(connect_errors), "connect_error_kinds": sorted(set(connect_errors))[:5],
           "open_seconds": round(t_open - t0, 3)}
    # Fresh clients while the idle ones are open.
    probes = []
    for _ in range(a.probes):
        probes.append(probe(a.port))
        time.sleep(0.1)
    res["probes"] = probes
    res["probes_done_after_s"] = round(time.time() - t_open, 3)
    # Watch for the server closing them.
    deadline = t_open + a.timeout + a.grace
    next_trickle = time.time() + a.timeout * 0.6
    got_bytes = 0
    while time.time() < deadline and len(closed) < len(socks):
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            try:
                d = s.recv(4096)
            except (ConnectionResetError, OSError):
                d = None
            if d:
                got_bytes += len(d)  # e.g. an error response before the close
                continue
            closed[s] = time.time()
            how[s] = "reset" if d is None else "eof"
            sel.unregister(s)
        if a.trickle and time.time() >= next_trickle:
            next_trickle = time.time() + a.timeout * 0.6
            for s in socks:
                if s not in closed and sel.get_key(s).data:
                    try:
                        s.send(b"X")
                    except OSError:
                        pass
    idle_socks = [s for i, s in enumerate(socks) if i < a.conns]
    trickle_socks = socks[len(idle_socks):] if a.trickle else []
    life = sorted(closed[s] - opened[s] for s in idle_socks if s in closed)
    res.update({
        "closed_within_deadline": sum(1 for s in idle_socks if s in closed),
        "closed_before_timeout": sum(1 for s in idle_socks if s in closed and closed[s] - opened[s] < a.timeout - 0.5),
        "eof": sum(1 for s in idle_socks if how.get(s) == "eof"),
        "reset": sum(1 for s in idle_socks if how.get(s) == "reset"),
        "still_open": sum(1 for s in idle_socks if s not in closed),
        "close_after_s_min": round(life[0], 3) if life else None,
        "close_after_s_median": round(life[len(life) // 2], 3) if life else None,
        "close_after_s_max": round(life[-1], 3) if life else None,
        "bytes_received": got_bytes,
        "trickle_still_open": sum(1 for s in trickle_socks if s not in closed),
        "watch_seconds": round(time.time() - t_open, 2),
    })
    for s in socks:
        s.close()
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
