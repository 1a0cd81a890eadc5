#!/usr/bin/env bash
# nginx from Debian as the fleet tests' load balancer (the stand-in for a
# Kubernetes Service): listens on 127.0.0.1:LB_PORT, spreads requests over
# the replica ports, retries a request on the next replica when one is down.
# Runs in the background; stop it with kill "$(cat DIR/nginx.pid)".
# usage: fleet_nginx.sh DIR LB_PORT REPLICA_PORT...
set -euo pipefail
dir=$1 lb=$2; shift 2
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
mkdir -p "$dir/nginx"
{
  [ "$(id -u)" -eq 0 ] && echo "user root;"
  cat <<NGX
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $dir/nginx/body;
  proxy_temp_path $dir/nginx/proxy;
  fastcgi_temp_path $dir/nginx/fastcgi;
  uwsgi_temp_path $dir/nginx/uwsgi;
  scgi_temp_path $dir/nginx/scgi;
  upstream replicas {
$(for p in "$@"; do echo "    server 127.0.0.1:$p max_fails=1 fail_timeout=2s;"; done)
    keepalive 8;
  }
  server {
    listen 127.0.0.1:$lb;
    location / {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host localhost;
      proxy_next_upstream error timeout http_502 http_503;
    }
  }
}
NGX
} > "$dir/nginx.conf"
exec "$NGINX" -c "$dir/nginx.conf" -p "$dir/nginx" -e "$dir/nginx-error.log"
