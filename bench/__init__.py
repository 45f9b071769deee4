"""Benchmarks of the registrar against the floor (issue 5): `python -m bench SCENARIO|all`."""
