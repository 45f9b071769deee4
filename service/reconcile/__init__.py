"""Converging Consul to Marathon + Docker: the work queue, the ledger, the per-app step, the resync.

The public face is `Reconciler` (intake, web, runtime and cli use only it, `ReconcileSettings` and
`Drift`); docs/architecture.md describes how the modules of this package fit together.
"""

from service.reconcile.diff import Drift
from service.reconcile.reconciler import Reconciler
from service.reconcile.settings import ReconcileSettings
from service.reconcile.work import AppWork

__all__ = ["AppWork", "Drift", "ReconcileSettings", "Reconciler"]
