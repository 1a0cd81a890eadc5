#!/usr/bin/env python3
"""Adapts deploy/kubernetes/ for `podman kube play` (what `make test-kube` runs).

podman 4.3 (Debian 12) plays Pods, Deployments (one pod each, whatever
`replicas` says), PersistentVolumeClaims and ConfigMaps; it has no
StatefulSet, Service, HorizontalPodAutoscaler or PodDisruptionBudget, and
without a DNS plugin pods cannot find each other by Service name. So, and
only so:

  * the StatefulSet becomes a Deployment of 1 whose volumeClaimTemplate is a
    PersistentVolumeClaim (podman makes it a named volume);
  * the replicas' Deployment becomes N Deployments of 1 (N = its replicas);
  * Services, the HPA and the PDB are dropped (the test puts nginx where the
    Service would be);
  * every pod uses the host's network, each on its own loopback port (the
    containers' `ports` go: podman maps none on the host's network; probes
    name the port number), and the replicas' --follow URL points at the
    trainer's port instead of the Service name;
  * the image becomes the one the test built.

Everything else (args, env, probes, resources, securityContext, volumes)
is passed through unchanged.

usage: kube_to_podman.py DIR IMAGE TRAINER_PORT REPLICA_PORT... > play.yaml
"""
import copy
import sys

import yaml


def load(d):
    import os
    k = yaml.safe_load(open(os.path.join(d, 'kustomization.yaml')))
    docs = []
    for r in k['resources']:
        docs += [x for x in yaml.safe_load_all(open(os.path.join(d, r))) if x]
    return docs


def main():
    d, image, tport = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rports = [int(p) for p in sys.argv[4:]]
    docs = load(d)
    trainer_svc = next(x for x in docs if x['kind'] == 'Service'
                       and x['metadata']['name'] == 'mnistd-trainer')
    svc_url = 'http://%s:%d' % (trainer_svc['metadata']['name'], trainer_svc['spec']['ports'][0]['port'])
    out = []

    def adapt(pod, port, name):
        spec = pod['spec']
        spec['hostNetwork'] = True
        for c in spec['containers']:
            c['image'] = image
            env = [e for e in c.get('env', []) if e['name'] != 'MNISTD_LISTEN']
            env.append({'name': 'MNISTD_LISTEN', 'value': '127.0.0.1:%d' % port})
            c['env'] = env
            c['args'] = [a.replace(svc_url, 'http://127.0.0.1:%d' % tport) for a in c.get('args', [])]
            # Probes name the port; with the host's network it is the new one.
            for p in ('livenessProbe', 'readinessProbe'):
                if p in c:
                    c[p]['httpGet']['port'] = port
            # podman refuses port mappings on the host's network.
            c.pop('ports', None)
        return pod

    for x in docs:
        kind, name = x['kind'], x['metadata']['name']
        if kind == 'StatefulSet':
            dep = {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': copy.deepcopy(x['metadata']),
                   'spec': {'replicas': 1, 'selector': x['spec']['selector'],
                            'template': copy.deepcopy(x['spec']['template'])}}
            vols = dep['spec']['template']['spec'].setdefault('volumes', [])
            for t in x['spec'].get('volumeClaimTemplates', []):
                claim = '%s-%s' % (t['metadata']['name'], name)
                out.append({'apiVersion': 'v1', 'kind': 'PersistentVolumeClaim',
                            'metadata': {'name': claim}, 'spec': t['spec']})
                vols.append({'name': t['metadata']['name'], 'persistentVolumeClaim': {'claimName': claim}})
            adapt(dep['spec']['template'], tport, name)
            out.append(dep)
        elif kind == 'Deployment':
            n = x['spec'].get('replicas', 1)
            if n != len(rports):
                sys.exit('kube_to_podman: %s has %d replicas; give %d replica ports' % (name, n, n))
            for i, port in enumerate(rports):
                dep = copy.deepcopy(x)
                dep['metadata']['name'] = '%s-%d' % (name, i)
                dep['spec']['replicas'] = 1
                adapt(dep['spec']['template'], port, dep['metadata']['name'])
                out.append(dep)
        # Service, HorizontalPodAutoscaler, PodDisruptionBudget: not in podman.
    yaml.safe_dump_all(out, sys.stdout, sort_keys=False)


if __name__ == '__main__':
    main()
