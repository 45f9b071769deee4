"""Consul: the agents' client (register, deregister, read back what we own), the lock's session and
KV client, and the one call wrapper both go through (timing, error contract, retries)."""
