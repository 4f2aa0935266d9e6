"""The cascade hosted on Ray Serve: recall, one coarse deployment per A/B arm, a shared fine
deployment and a FastAPI ingress that assigns arms (``common.assignment``).

- ``start(AppArgs(...))`` deploys and returns a ``ServedCascade`` (handle, URL, ``ranker()``,
  ``swap()``, ``stop()``); ``build_app`` is the Serve app builder (``configs/serve.yaml``);
  ``python -m serving`` starts it from the command line.
- ``ServeRanker`` is a ``PageRanker``: ``run_sessions(sim, ranker, keys)`` through Serve gives
  the sessions the in-process ``Cascade`` gives.
- ``PageRequests`` / ``PageResults``: the batched entry point's input and output.

Names are imported on first use, so a replica that imports one deployment module does not
pay for the rest (every replica is a fresh process on a small machine).
"""

import importlib

_EXPORTS = {
    "AppArgs": "serving.args",
    "ArmArgs": "serving.args",
    "AssignmentArgs": "serving.args",
    "PageRequests": "serving.pipeline",
    "PageResults": "serving.pipeline",
    "ServeError": "serving.app",
    "ServeRanker": "serving.client",
    "ServedCascade": "serving.app",
    "build_app": "serving.app",
    "connect": "serving.app",
    "init_ray": "common.ray_env",
    "start": "serving.app",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'serving' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
