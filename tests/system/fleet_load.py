#!/usr/bin/env python3
"""Prediction load for the fleet tests: POSTs IMAGE_JSON to /v1/predict on
PORT (keep-alive, one connection) until STOP_FILE exists, then writes
{"ok", "errors", "models": {id: answers}, "first_error"} to OUT.
usage: fleet_load.py PORT IMAGE_JSON STOP_FILE OUT"""
import http.client, json, os, sys
port, img, stop, out = int(sys.argv[1]), open(sys.argv[2], 'rb').read(), sys.argv[3], sys.argv[4]
ok = errors = 0; models = {}; first_err = None
conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
while not os.path.exists(stop):
    try:
        conn.request('POST', '/v1/predict', img, {'Content-Type': 'application/json'})
        r = conn.getresponse(); body = r.read()
        if r.status == 200:
            ok += 1; m = json.loads(body)['model']; models[m] = models.get(m, 0) + 1
        else:
            errors += 1; first_err = first_err or f'{r.status} {body[:200]!r}'
    except Exception as e:
        errors += 1; first_err = first_err or repr(e)
        conn.close(); conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
json.dump({'ok': ok, 'errors': errors, 'models': models, 'first_error': first_err}, open(out, 'w'))
