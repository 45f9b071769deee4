"""Consul simulator for the test world: several client agents, one shared catalog, DNS.

Strict by design: it rejects what a real Consul 1.15-1.20 agent rejects, with the same status and
plain-text message (`/work/shared/reference/consul.md`). Run it with
`python -m devcluster.consul_sim --agent HOST:PORT=NODE [...] --dns HOST:PORT`; see `__main__`.
"""
