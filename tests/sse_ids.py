#!/usr/bin/env python3
"""Checks on event-stream ids across a daemon crash (issue 9 #3), for
tests/test_server.sh.

  sse_ids.py seen PRE            prints the ids of the events in PRE (the
                                 stream a client read until the crash)
  sse_ids.py after PRE POST      POST (the whole stream read after the restart)
                                 has increasing ids, one "end", last; every id
                                 seen in PRE means the same event in POST or
                                 is never used again (new ids are above)
  sse_ids.py resume POST RES X   RES (resumed with Last-Event-ID X) holds
                                 exactly the events of POST after X, to "end"
"""
import sys


def parse(path):
    evs, cur = [], {}
    for line in open(path).read().split("\n"):
        if line.startswith("id: "):
            cur["id"] = int(line[4:])
        elif line.startswith("event: "):
            cur["event"] = line[7:]
        elif line.startswith("data: "):
            cur["data"] = line[6:]
        elif line == "" and cur:
            evs.append(cur)
            cur = {}
    return evs


def main():
    cmd = sys.argv[1]
    if cmd == "seen":
        pre = parse(sys.argv[2])
        assert pre and any(e["event"] == "progress" for e in pre), "no progress seen before the crash"
        print(" ".join(str(e["id"]) for e in pre))
    elif cmd == "after":
        pre, post = parse(sys.argv[2]), parse(sys.argv[3])
        ids = [e["id"] for e in post]
        assert ids == sorted(set(ids)), ids
        assert post[-1]["event"] == "end" and sum(e["event"] == "end" for e in post) == 1
        seen = {e["id"]: e for e in pre}
        for e in post:
            if e["id"] in seen:
                old = seen[e["id"]]
                assert (old["event"], old["data"]) == (e["event"], e["data"]), (e, old)
            else:
                assert e["id"] > max(seen), ("id reused", e["id"], max(seen))
        epochs = [e for e in post if e["event"] == "epoch"]
        assert len(epochs) == int(sys.argv[4]) if len(sys.argv) > 4 else epochs, epochs
    elif cmd == "resume":
        post, res, x = parse(sys.argv[2]), parse(sys.argv[3]), int(sys.argv[4])
        want = [e for e in post if e["id"] > x]
        assert res == want and res and res[-1]["event"] == "end", (x, [e["id"] for e in res])
    else:
        sys.exit("unknown command " + cmd)


main()
