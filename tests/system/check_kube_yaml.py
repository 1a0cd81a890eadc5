#!/usr/bin/env python3
"""Structure check of deploy/kubernetes/ without a cluster (make test-kube,
make test-replicas): every object has the fields Kubernetes requires, the
references between objects resolve, and images, ports, probe paths, user
and state directory agree with the Dockerfile and the daemon's route table.

usage: check_kube_yaml.py [DIR]   (default deploy/kubernetes; repo root is
two levels up from DIR). Prints one line per problem; exits 1 if any."""
import os
import re
import sys

import yaml

d = sys.argv[1] if len(sys.argv) > 1 else 'deploy/kubernetes'
root = os.environ.get('MNISTD_ROOT') or os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
problems = []


def bad(msg):
    problems.append(msg)


kust = yaml.safe_load(open(os.path.join(d, 'kustomization.yaml')))
if kust.get('apiVersion') != 'kustomize.config.k8s.io/v1beta1' or kust.get('kind') != 'Kustomization':
    bad('kustomization.yaml: apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization')
docs = []
for r in kust.get('resources', []):
    if not os.path.exists(os.path.join(d, r)):
        bad('kustomization.yaml: resource %s does not exist' % r)
        continue
    docs += [(r, x) for x in yaml.safe_load_all(open(os.path.join(d, r))) if x is not None]
listed = set(kust.get('resources', []))
for f in os.listdir(d):
    if f.endswith('.yaml') and f != 'kustomization.yaml' and f not in listed:
        bad('%s is not listed in kustomization.yaml' % f)

# --- what the image and the daemon say ----------------------------------------
dockerfile = open(os.path.join(root, 'Dockerfile')).read()
expose = int(re.search(r'^EXPOSE\s+(\d+)', dockerfile, re.M).group(1))
uid = int(re.search(r'useradd[^\n]*--uid (\d+)', dockerfile).group(1))
volume = re.search(r'^VOLUME\s+(\S+)', dockerfile, re.M).group(1)
entry = re.search(r'^ENTRYPOINT\s+\["([^"]+)"\]', dockerfile, re.M).group(1)
# The route table's GET rows, wherever the server keeps its table.
import glob
routes = set()
for f in glob.glob(os.path.join(root, 'server', '*.c')):
    routes |= set(re.findall(r'\{"GET", "(/[^"]*)"', open(f).read()))
image_names = {i['name'] for i in kust.get('images', [])}

KINDS = {'Service': 'v1', 'StatefulSet': 'apps/v1', 'Deployment': 'apps/v1',
         'HorizontalPodAutoscaler': 'autoscaling/v2', 'PodDisruptionBudget': 'policy/v1'}
DNS1123 = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')
objs = {}
for f, x in docs:
    kind, name = x.get('kind'), (x.get('metadata') or {}).get('name')
    where = '%s: %s/%s' % (f, kind, name)
    if kind not in KINDS:
        bad('%s: unexpected kind' % where)
        continue
    if x.get('apiVersion') != KINDS[kind]:
        bad('%s: apiVersion must be %s' % (where, KINDS[kind]))
    if not name or not DNS1123.match(name) or len(name) > 63:
        bad('%s: metadata.name must be a DNS-1123 label' % where)
    if not isinstance(x.get('spec'), dict):
        bad('%s: no spec' % where)
        continue
    if (kind, name) in objs:
        bad('%s: defined twice' % where)
    objs[(kind, name)] = (where, x)


def sub(a, b):
    return all(b.get(k) == v for k, v in (a or {}).items())


def workloads():
    return [(k, n, w, x) for (k, n), (w, x) in objs.items() if k in ('Deployment', 'StatefulSet')]


for kind, name, where, x in workloads():
    s = x['spec']
    sel = (s.get('selector') or {}).get('matchLabels')
    tmpl = s.get('template') or {}
    labels = (tmpl.get('metadata') or {}).get('labels') or {}
    if not sel or not sub(sel, labels):
        bad('%s: spec.selector.matchLabels must be set and match the template labels' % where)
    ps = tmpl.get('spec') or {}
    cs = ps.get('containers') or []
    if not cs:
        bad('%s: no containers' % where)
    psc = ps.get('securityContext') or {}
    if psc.get('runAsNonRoot') is not True or psc.get('runAsUser') != uid:
        bad('%s: pod securityContext must be runAsNonRoot with runAsUser %d (the image user)' % (where, uid))
    if (psc.get('seccompProfile') or {}).get('type') != 'RuntimeDefault':
        bad('%s: seccompProfile must be RuntimeDefault' % where)
    vols = {v['name'] for v in ps.get('volumes', [])} | \
        {t['metadata']['name'] for t in s.get('volumeClaimTemplates', [])}
    if kind == 'StatefulSet':
        if s.get('replicas') != 1:
            bad('%s: the trainer must be exactly one (it owns the database)' % where)
        if ('Service', s.get('serviceName')) not in objs:
            bad('%s: serviceName %s is not a Service here' % (where, s.get('serviceName')))
        for t in s.get('volumeClaimTemplates', []):
            if not ((t.get('spec') or {}).get('resources') or {}).get('requests', {}).get('storage') \
                    or not t['spec'].get('accessModes'):
                bad('%s: volumeClaimTemplate needs accessModes and a storage request' % where)
    for c in cs:
        cw = '%s container %s' % (where, c.get('name'))
        if not c.get('name') or not c.get('image'):
            bad('%s: name and image are required' % cw)
            continue
        if c['image'].split(':')[0] not in image_names:
            bad('%s: image %s is not in kustomization images %s' % (cw, c['image'], sorted(image_names)))
        args = c.get('args') or []
        if c.get('command') or not args or args[0] != 'serve':
            bad('%s: must run the image entrypoint (%s) with args starting with serve' % (cw, entry))
        env = {e['name']: e.get('value') for e in c.get('env', [])}
        listen = env.get('MNISTD_LISTEN', '')
        if listen != '0.0.0.0:%d' % expose:
            bad('%s: MNISTD_LISTEN must be 0.0.0.0:%d (the EXPOSEd port, all interfaces)' % (cw, expose))
        ports = {p.get('name'): p.get('containerPort') for p in c.get('ports', [])}
        if ports.get('http') != expose:
            bad('%s: containerPort http must be %d (Dockerfile EXPOSE)' % (cw, expose))
        for probe in ('livenessProbe', 'readinessProbe'):
            g = (c.get(probe) or {}).get('httpGet') or {}
            if not g:
                bad('%s: %s httpGet is required' % (cw, probe))
                continue
            if g.get('path') not in routes:
                bad('%s: %s path %s is not a GET route of the daemon' % (cw, probe, g.get('path')))
            if ports.get(g.get('port'), g.get('port')) != expose:
                bad('%s: %s port must resolve to %d' % (cw, probe, expose))
        if (c.get('livenessProbe') or {}).get('httpGet', {}).get('path') != '/healthz':
            bad('%s: liveness must be /healthz' % cw)
        r = c.get('resources') or {}
        for k in ('requests', 'limits'):
            if not (r.get(k) or {}).get('cpu') or not (r.get(k) or {}).get('memory'):
                bad('%s: resources.%s needs cpu and memory' % (cw, k))
        sc = c.get('securityContext') or {}
        if sc.get('readOnlyRootFilesystem') is not True or sc.get('allowPrivilegeEscalation') is not False \
                or (sc.get('capabilities') or {}).get('drop') != ['ALL']:
            bad('%s: needs readOnlyRootFilesystem, no privilege escalation, capabilities drop ALL' % cw)
        for m in c.get('volumeMounts', []):
            if m.get('name') not in vols:
                bad('%s: volumeMount %s has no volume' % (cw, m.get('name')))
        if kind == 'StatefulSet':
            state = env.get('MNISTD_STATE_DIR', volume)
            if state != volume or not any(m.get('mountPath') == state for m in c.get('volumeMounts', [])):
                bad('%s: the state directory %s (Dockerfile VOLUME) must be a mounted claim' % (cw, volume))
        if kind == 'Deployment':
            if '/readyz' != (c.get('readinessProbe') or {}).get('httpGet', {}).get('path'):
                bad('%s: a replica is ready only with a model: readiness must be /readyz' % cw)
            fol = args[args.index('--follow') + 1] if '--follow' in args[:-1] else env.get('MNISTD_FOLLOW')
            m = re.match(r'^http://([a-z0-9-]+):(\d+)/?$', fol or '')
            svc = objs.get(('Service', m.group(1))) if m else None
            if not svc or int(m.group(2)) not in [p.get('port') for p in svc[1]['spec'].get('ports', [])]:
                bad('%s: --follow %s must name the trainer Service and its port' % (cw, fol))
            elif not any(k == 'StatefulSet' and sub(svc[1]['spec'].get('selector'), x2['spec']['template']['metadata']['labels'])
                         for k, _, _, x2 in workloads()):
                bad('%s: --follow Service %s does not select the trainer' % (cw, m.group(1)))

for (kind, name), (where, x) in objs.items():
    s = x['spec']
    if kind == 'Service':
        sel = s.get('selector')
        targets = [x2 for _, _, _, x2 in workloads() if sel and sub(sel, x2['spec']['template']['metadata']['labels'])]
        if not targets:
            bad('%s: selector matches no workload' % where)
        for p in s.get('ports') or [{}]:
            if not p.get('port'):
                bad('%s: every port needs a port number' % where)
            for t in targets:
                names = [q.get('name') for c in t['spec']['template']['spec']['containers'] for q in c.get('ports', [])]
                if isinstance(p.get('targetPort'), str) and p['targetPort'] not in names:
                    bad('%s: targetPort %s is no container port name' % (where, p['targetPort']))
    elif kind == 'HorizontalPodAutoscaler':
        ref = s.get('scaleTargetRef') or {}
        if (ref.get('kind'), ref.get('name')) not in objs or ref.get('apiVersion') != 'apps/v1':
            bad('%s: scaleTargetRef must name a workload here' % where)
        if not s.get('maxReplicas') or s.get('minReplicas', 1) > s['maxReplicas']:
            bad('%s: maxReplicas is required and >= minReplicas' % where)
        if not any((m.get('resource') or {}).get('name') == 'cpu' for m in s.get('metrics', [])):
            bad('%s: must scale on cpu' % where)
    elif kind == 'PodDisruptionBudget':
        sel = (s.get('selector') or {}).get('matchLabels')
        if not sel or not any(sub(sel, x2['spec']['template']['metadata']['labels']) for _, _, _, x2 in workloads()):
            bad('%s: selector matches no workload' % where)
        if ('minAvailable' in s) == ('maxUnavailable' in s):
            bad('%s: exactly one of minAvailable, maxUnavailable' % where)

for k in ('StatefulSet', 'Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget'):
    if not any(kk == k for kk, _ in objs):
        bad('no %s in %s' % (k, d))
for p in problems:
    print('kube-yaml: ' + p)
print('kube-yaml: %d objects, %d problems' % (len(objs), len(problems)))
sys.exit(1 if problems else 0)
