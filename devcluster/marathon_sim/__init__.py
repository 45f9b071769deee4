"""Marathon simulator: a stand-in for Marathon + Mesos in the test world.

Deploying an app really launches its tasks as Docker containers on the test world's slaves, the way
the Mesos Docker containerizer does, and the simulator speaks Marathon's REST API and both event
transports (SSE, and HTTP callbacks for 1.4) in the JSON shapes of `reference/marathon.md`.
See `devcluster/marathon_sim/README.md` for what it does and where it is not faithful.
"""
