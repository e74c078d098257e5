"""kubetts' Kubernetes operator (kopf): reconciles TTSService objects into running services.

Pure parts -- the CRD-driven spec defaults and validation (``spec``), the child
manifests (``builders``) and the autoscaling decision (``autoscaler``) -- are kept apart
from the kopf handlers, which only read, build and apply.
"""

__version__ = "0.1.0"
