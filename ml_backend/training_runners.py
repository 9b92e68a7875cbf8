"""Kept for RQ jobs enqueued before the code moved to :mod:`ml_backend.jobs.runners`.

Redis stores a job's function by its dotted path; a job enqueued by an older backend names
``ml_backend.training_runners.rq_train`` and must still run on an upgraded worker. Nothing else
should import this module.
"""

from ml_backend.jobs.runners import rq_train

__all__ = ["rq_train"]
