#!/bin/bash
# The test world's three slaves, one per Weave layout (README "Topology"; reference docker-test-hosts, weave.md §8):
#   slave 1 127.0.0.2  the article's layout: dockerd --bridge=weave, the overlay IP under Networks.bridge
#   slave 2 127.0.0.3  Weave's network plugin layout: a Docker network `weave` on the same bridge
#   slave 3 127.0.0.4  Weave's proxy layout: a docker0-like default bridge (172.17.0.0/16); the proxy stand-in
#                      (devcluster/weave_proxy_sim.py, started by `python -m devcluster up`) attaches `ethwe`
#   slave 4 127.0.0.5  Weave's CNI plugin under the Mesos containerizer (reference marathon-ucr-pods.md §1.3-§1.4):
#                      a private runtime (dockerd on a unix socket only, no TCP port: no Docker API the registrar
#                      can reach knows these containers) whose `weave` network is the same bridge, range 10.32.4.0/24
set -eu
B=/var/lib/devcluster
# the daemons started here must not inherit the caller's descriptors: under `flock /tmp/world.lock bash
# slaves-up.sh` they would hold the world lock for as long as they run
for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && [ "$fd" != 255 ] && eval "exec $fd>&-" 2>/dev/null; done || true
# the overlay bridge, as weave would create it
ip link show weave >/dev/null 2>&1 || { ip link add weave type bridge; ip addr add 10.32.0.1/12 dev weave; ip link set weave up; }
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# Each slave's Docker API: plain on 2375; with DEVCLUSTER_TLS_DIR (python -m devcluster up --tls) TLS-only on
# Docker's TLS port 2376, client certificates required (--tlsverify), certificates from devcluster/pki.py.
# The unix socket (the tests' and the Marathon simulator's way in, as Mesos uses the local socket) stays.
tcp() {
  if [ -n "${DEVCLUSTER_TLS_DIR:-}" ]; then
    T=$DEVCLUSTER_TLS_DIR
    echo "--host tcp://$1:2376 --tlsverify --tlscacert $T/ca.pem --tlscert $T/dockerd-$1.pem --tlskey $T/dockerd-$1.key"
  else
    echo "--host tcp://$1:2375"
  fi
}
# slave 1: dockerd --bridge=weave (Docker's default network IS the overlay), containers in 10.32.1.0/24,
# published ports on 127.0.0.2; it owns iptables (like a real slave)
mkdir -p $B/s1
running $B/s1/pid || { setsid dockerd --host unix://$B/s1.sock $(tcp 127.0.0.2) --data-root $B/s1/data --exec-root $B/s1/exec \
  --pidfile $B/s1/pid --bridge weave --fixed-cidr 10.32.1.0/24 --ip 127.0.0.2 > $B/s1.log 2>&1 < /dev/null & }
# slave 2: own default bridge (pre-created, never --bridge none), no iptables of its own
ip link show s2br0 >/dev/null 2>&1 || { ip link add s2br0 type bridge; ip addr add 172.31.0.1/16 dev s2br0; ip link set s2br0 up; }
mkdir -p $B/s2
running $B/s2/pid || { setsid dockerd --host unix://$B/s2.sock $(tcp 127.0.0.3) --data-root $B/s2/data --exec-root $B/s2/exec \
  --pidfile $B/s2/pid --bridge s2br0 --ip 127.0.0.3 --iptables=false --ip-masq=false > $B/s2.log 2>&1 < /dev/null & }
# slave 3: docker0 as a slave of the proxy layout has it (172.17.0.0/16, Docker's own default), no iptables of its own
ip link show s3docker0 >/dev/null 2>&1 || { ip link add s3docker0 type bridge; ip addr add 172.17.0.1/16 dev s3docker0; ip link set s3docker0 up; }
mkdir -p $B/s3
running $B/s3/pid || { setsid dockerd --host unix://$B/s3.sock $(tcp 127.0.0.4) --data-root $B/s3/data --exec-root $B/s3/exec \
  --pidfile $B/s3/pid --bridge s3docker0 --ip 127.0.0.4 --iptables=false --ip-masq=false > $B/s3.log 2>&1 < /dev/null & }
# slave 4's runtime: unix socket only (and so ready in ~0.2 s: no TCP listener, no insecure-binding pause),
# its own default bridge (pre-created, never --bridge none), no iptables of its own
ip link show s4ucr0 >/dev/null 2>&1 || { ip link add s4ucr0 type bridge; ip addr add 172.30.0.1/16 dev s4ucr0; ip link set s4ucr0 up; }
mkdir -p $B/s4-ucr
running $B/s4-ucr/pid || { setsid dockerd --host unix://$B/s4-ucr/runtime.sock --data-root $B/s4-ucr/data \
  --exec-root $B/s4-ucr/exec --pidfile $B/s4-ucr/pid --bridge s4ucr0 --iptables=false --ip-masq=false \
  > $B/s4-ucr.log 2>&1 < /dev/null & }
sock() { case $1 in s4) echo $B/s4-ucr/runtime.sock;; *) echo $B/$1.sock;; esac; }
for s in s1 s2 s3 s4; do
  for _ in $(seq 300); do docker -H unix://$(sock $s) version >/dev/null 2>&1 && continue 2; sleep 0.1; done
  echo "slave $s: dockerd not ready after 30 s, see $B/$s*.log" >&2; exit 1
done
# images: busybox (a shell and the applets the tests use), and one without a shell (only /httpd, a static
# busybox called by its applet name, and /www): for the Weave lookup that starts no process in the container
R=$(mktemp -d)
if ! docker -H unix://$B/s1.sock image inspect local/busybox:1 >/dev/null 2>&1; then
  mkdir -p $R/bb/bin; cp /bin/busybox $R/bb/bin/; for c in sh sleep httpd nc cat env ip echo mkdir ls true kill printf; do ln -sf busybox $R/bb/bin/$c; done
  tar -C $R/bb -c . | docker -H unix://$B/s1.sock import - local/busybox:1 >/dev/null
fi
if ! docker -H unix://$B/s1.sock image inspect local/noshell:1 >/dev/null 2>&1; then
  mkdir -p $R/ns/www; cp /bin/busybox $R/ns/httpd; echo ok > $R/ns/www/index.html
  tar -C $R/ns -c . | docker -H unix://$B/s1.sock import -c 'CMD ["/httpd", "-f", "-p", "80", "-h", "/www"]' - local/noshell:1 >/dev/null
fi
rm -rf $R
for s in s2 s3 s4; do
  for i in local/busybox:1 local/noshell:1; do
    docker -H unix://$(sock $s) image inspect $i >/dev/null 2>&1 || docker -H unix://$B/s1.sock save $i | docker -H unix://$(sock $s) load -q >/dev/null
  done
done
# slave 2's `weave` network on the same bridge, its own range, ports on 127.0.0.3
docker -H unix://$B/s2.sock network inspect weave >/dev/null 2>&1 || docker -H unix://$B/s2.sock network create --driver bridge \
  --subnet 10.32.0.0/12 --gateway 10.32.0.1 --ip-range 10.32.2.0/24 \
  -o com.docker.network.bridge.name=weave -o com.docker.network.bridge.host_binding_ipv4=127.0.0.3 weave >/dev/null
# slave 4's `weave` network: the CNI plugin's view of the same bridge, the slave's own range; host ports (a
# port-mapper wrapping the plugin, reference marathon-ucr-pods.md §1.4) on 127.0.0.5
docker -H unix://$(sock s4) network inspect weave >/dev/null 2>&1 || docker -H unix://$(sock s4) network create --driver bridge \
  --subnet 10.32.0.0/12 --gateway 10.32.0.1 --ip-range 10.32.4.0/24 \
  -o com.docker.network.bridge.name=weave -o com.docker.network.bridge.host_binding_ipv4=127.0.0.5 weave >/dev/null
# slave 3's proxy volume /w (reference weave.md §1.4, §8 step 2): `w` waits, as weavewait does, until the
# attach's last step (the 224.0.0.0/4 route on ethwe) and then execs the command; with its own static
# busybox, so it works in images without a shell
W=$B/weave-w
mkdir -p $W; cp /bin/busybox $W/busybox
cat > $W/w <<'WAIT'
#!/w/busybox sh
while ! /w/busybox ip route show | /w/busybox grep -q '^224\.0\.0\.0/4 dev ethwe'; do /w/busybox usleep 20000; done
exec "$@"
WAIT
chmod 755 $W/w $W/busybox
echo up
