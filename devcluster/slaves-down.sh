#!/bin/bash
# Tear the topology down: containers, networks, daemons (by pid file), bridges, Docker's iptables chains.
# (Slave 3's `ethwe` veths go with their containers' network namespaces; a leftover host end is removed.)
set -u
B=/var/lib/devcluster
# slave 4 (the Mesos containerizer's stand-in runtime) lives in $B/s4-ucr, its socket there
sock() { case $1 in s4-ucr) echo $B/s4-ucr/runtime.sock;; *) echo $B/$1.sock;; esac; }
for s in s1 s2 s3 s4-ucr; do
  [ -S $(sock $s) ] && docker -H unix://$(sock $s) rm -f $(docker -H unix://$(sock $s) ps -aq) >/dev/null 2>&1
done
for s in s2 s4-ucr; do [ -S $(sock $s) ] && docker -H unix://$(sock $s) network rm weave >/dev/null 2>&1; done
# all daemons told at once, then waited for (each takes ~3 s to exit: in parallel, not one after another)
P=""
for s in s1 s2 s3 s4-ucr; do
  if [ -f $B/$s/pid ]; then p=$(cat $B/$s/pid); kill -TERM $p 2>/dev/null && P="$P $p"; fi
done
for p in $P; do while kill -0 $p 2>/dev/null; do sleep 0.1; done; done
for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep '^vethwepl'); do ip link del "$l" 2>/dev/null; done
ip link del s2br0 2>/dev/null; ip link del s3docker0 2>/dev/null; ip link del s4ucr0 2>/dev/null; ip link del weave 2>/dev/null
# slave 1 ran with iptables on: remove the chains it created (they outlive the daemon)
for t in filter nat; do
  iptables -t $t -S 2>/dev/null | grep -E '^-A .*(DOCKER|weave)' | sed 's/^-A/-D/' | while read -r r; do iptables -t $t $r 2>/dev/null; done
  for c in DOCKER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER-USER; do iptables -t $t -F $c 2>/dev/null; iptables -t $t -X $c 2>/dev/null; done
done
# dockerd bind-mounts its data root and a netns file under its exec root: unmount, deepest first
for s in s1 s2 s3 s4-ucr; do
  awk -v p="$B/$s/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  rm -rf $B/$s $B/$s.sock
done
rm -rf $B/weave-w
echo down
