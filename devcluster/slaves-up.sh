#!/bin/bash
# Verified topology for the test world: the article's layout (slave 1) + Weave 1.x network layout (slave 2)
set -eu
B=/var/lib/devcluster
# the overlay bridge, as weave would create it
ip link show weave >/dev/null 2>&1 || { ip link add weave type bridge; ip addr add 10.32.0.1/12 dev weave; ip link set weave up; }
# slave 1: dockerd --bridge=weave (Docker's default network IS the overlay), containers in 10.32.1.0/24,
# published ports on 127.0.0.2; it owns iptables (like a real slave)
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
mkdir -p $B/s1
running $B/s1/pid || setsid dockerd --host unix://$B/s1.sock --host tcp://127.0.0.2:2375 --data-root $B/s1/data --exec-root $B/s1/exec \
  --pidfile $B/s1/pid --bridge weave --fixed-cidr 10.32.1.0/24 --ip 127.0.0.2 > $B/s1.log 2>&1 < /dev/null &
# slave 2: own default bridge (pre-created, never --bridge none), no iptables of its own;
ip link show s2br0 >/dev/null 2>&1 || { ip link add s2br0 type bridge; ip addr add 172.31.0.1/16 dev s2br0; ip link set s2br0 up; }
mkdir -p $B/s2
# With DEVCLUSTER_TLS_DIR (python -m devcluster up --tls) slave 2's API is TLS-only on Docker's TLS port
# 2376, client certificates required (--tlsverify), with certificates from devcluster/pki.py.
S2_TCP="--host tcp://127.0.0.3:2375"
if [ -n "${DEVCLUSTER_TLS_DIR:-}" ]; then
  T=$DEVCLUSTER_TLS_DIR
  S2_TCP="--host tcp://127.0.0.3:2376 --tlsverify --tlscacert $T/ca.pem --tlscert $T/dockerd-127.0.0.3.pem --tlskey $T/dockerd-127.0.0.3.key"
fi
running $B/s2/pid || setsid dockerd --host unix://$B/s2.sock $S2_TCP --data-root $B/s2/data --exec-root $B/s2/exec \
  --pidfile $B/s2/pid --bridge s2br0 --ip 127.0.0.3 --iptables=false --ip-masq=false > $B/s2.log 2>&1 < /dev/null &
for s in s1 s2; do
  for _ in $(seq 300); do docker -H unix://$B/$s.sock version >/dev/null 2>&1 && continue 2; sleep 0.1; done
  echo "slave $s: dockerd not ready after 30 s, see $B/$s.log" >&2; exit 1
done
# image
if ! docker -H unix://$B/s1.sock image inspect local/busybox:1 >/dev/null 2>&1; then
  R=$(mktemp -d); mkdir -p $R/bin; cp /bin/busybox $R/bin/; for c in sh sleep httpd nc cat env ip echo mkdir ls true kill printf; do ln -sf busybox $R/bin/$c; done
  tar -C $R -c . | docker -H unix://$B/s1.sock import - local/busybox:1 >/dev/null; rm -rf $R
fi
docker -H unix://$B/s2.sock image inspect local/busybox:1 >/dev/null 2>&1 || docker -H unix://$B/s1.sock save local/busybox:1 | docker -H unix://$B/s2.sock load -q >/dev/null
# slave 2's `weave` network on the same bridge, its own range, ports on 127.0.0.3
docker -H unix://$B/s2.sock network inspect weave >/dev/null 2>&1 || docker -H unix://$B/s2.sock network create --driver bridge \
  --subnet 10.32.0.0/12 --gateway 10.32.0.1 --ip-range 10.32.2.0/24 \
  -o com.docker.network.bridge.name=weave -o com.docker.network.bridge.host_binding_ipv4=127.0.0.3 weave >/dev/null
echo up
