"""One module per job type, each declaring a ``worker.skeleton.JobHandler`` and registering it (``@register``).

Importing this package registers them all. A new job type is one new module here plus its name in the import below;
the skeleton (claim, lease, time limit, error-to-state) needs no edit.
"""
from . import classify, evaluate, train  # noqa: F401  (each registers its job type)
