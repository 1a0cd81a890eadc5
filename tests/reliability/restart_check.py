#!/usr/bin/env python3
"""Checks a freshly (re)started mnistd after a crash; used by tests/system/test_faults.sh.

Runs concurrently with the next SIGKILL timer, so it may be cut short: the
result says how far it got ("complete": false when the daemon went away).

  restart_check.py --base URL --job K --kept DIR --db FILE --out FILE [--wait S] [--pid P]

DIR holds job<ID>.before (the exact GET /v1/jobs/ID bodies of finished jobs
that must not change) and models.before (GET /v1/models); new models may only
come from killed jobs (--killed-jobs 4,5). Writes JSON:
  {"complete", "ready_s", "state", "epochs", "contiguous", "records_ok",
   "models_ok", "db", "errors": [...]}
"""
import argparse
import glob
import json
import os
import subprocess
import time
import urllib.request


def get(base, path, timeout=3.0):
    with urllib.request.urlopen(base + path, timeout=timeout) as r:
        return r.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--job", type=int, required=True)
    ap.add_argument("--killed-jobs", default="")
    ap.add_argument("--kept", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--wait", type=float, default=20.0)
    ap.add_argument("--pid", type=int, default=0, help="stop early if this process dies")
    a = ap.parse_args()
    t0 = time.time()
    res = {"complete": False, "ready_s": None, "errors": []}

    def save():
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f)
        os.replace(tmp, a.out)

    try:
        deadline = t0 + a.wait
        while True:
            try:
                get(a.base, "/healthz", 0.5)
                break
            except Exception:
                if a.pid and not os.path.exists("/proc/%d" % a.pid):
                    res["errors"].append("cut short: the daemon was killed before it answered")
                    save()
                    return
                if time.time() > deadline:
                    res["errors"].append("no /healthz within %.0fs" % a.wait)
                    save()
                    return
                time.sleep(0.02)
        res["ready_s"] = round(time.time() - t0, 3)
        save()
        d = json.loads(get(a.base, "/v1/jobs/%d" % a.job))
        ep = [m["epoch"] for m in d["metrics"]]
        res.update(state=d["state"], epochs=len(ep), contiguous=ep == list(range(1, len(ep) + 1)))
        if not res["contiguous"]:
            res["errors"].append("job %d metrics epochs %s" % (a.job, ep))
        if d["state"] not in ("queued", "running", "succeeded"):
            res["errors"].append("job %d is %s: %s" % (a.job, d["state"], d.get("error")))
        ok = True
        for f in sorted(glob.glob(os.path.join(a.kept, "job*.before"))):
            jid = int(os.path.basename(f)[3:-7])
            now = get(a.base, "/v1/jobs/%d" % jid)
            if now != open(f, "rb").read():
                ok = False
                res["errors"].append("job %d record changed" % jid)
        res["records_ok"] = ok
        before = json.load(open(os.path.join(a.kept, "models.before")))["models"]
        after = json.loads(get(a.base, "/v1/models"))["models"]
        byid = {m["id"]: m for m in after}
        killed = {int(x) for x in a.killed_jobs.split(",") if x}
        mok = all(byid.get(m["id"]) == m for m in before)
        extra = [m for m in after if m["id"] not in {x["id"] for x in before}]
        mok = mok and all(m["job_id"] in killed for m in extra)
        if not mok:
            res["errors"].append("models changed: before %s after %s" % (before, after))
        res["models_ok"] = mok
        save()
        r = subprocess.run(["sqlite3", "-readonly", a.db, "PRAGMA integrity_check"],
                           capture_output=True, text=True, timeout=30)
        res["db"] = (r.stdout + r.stderr).strip()
        if res["db"] != "ok":
            res["errors"].append("integrity_check: " + res["db"])
        res["complete"] = True
    except Exception as e:  # the daemon was killed under us, usually
        res["errors"].append("cut short: %s" % e)
    save()


if __name__ == "__main__":
    main()
