#!/usr/bin/env python3
"""Activates MODEL on the primary at PRIMARY_URL and measures the time from
the activation's answer until every replica port answers GET
/v1/models/active with that id (polled every 10 ms, 10 s at most). Prints
"SLOWEST EACH..." in seconds (99 for a replica that never got it).
usage: fleet_activate.py PRIMARY_URL MODEL TOKEN REPLICA_PORT..."""
import http.client, json, sys, time
pu, m, tok, ports = sys.argv[1], int(sys.argv[2]), sys.argv[3], [int(p) for p in sys.argv[4:]]
host, port = pu[7:].rstrip('/').split(':')
c = http.client.HTTPConnection(host, int(port), timeout=5)
c.request('POST', f'/v1/models/{m}/activate', b'', {'Authorization': 'Bearer ' + tok} if tok else {})
r = c.getresponse()
if r.status != 200:
    sys.exit(f'activate {m}: {r.status} {r.read()[:200]!r}')
t0 = time.monotonic(); left = set(ports); times = {}
while left and time.monotonic() - t0 < 10:
    for p in list(left):
        try:
            k = http.client.HTTPConnection('127.0.0.1', p, timeout=2)
            k.request('GET', '/v1/models/active')
            if json.loads(k.getresponse().read()).get('id') == m:
                times[p] = time.monotonic() - t0; left.discard(p)
        except (OSError, ValueError):
            pass
    time.sleep(0.01)
print('%.3f %s' % (99 if left else max(times.values()), ' '.join('%.3f' % times.get(p, 99) for p in ports)))
