"""The test world: two real Docker slaves, a Marathon simulator and a Consul simulator.

`python -m devcluster up` brings it up, `python -m devcluster down` stops exactly what it started.
The addresses below are the contract between the world, the tests, the demo and the benchmarks.
"""
