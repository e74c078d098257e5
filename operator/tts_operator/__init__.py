"""kubetts' Kubernetes operator (kopf): reconciles TTSService objects.

A placeholder in this version: the operator is built on top of the service's
settings (``tts_service.settings``), which it will write into each Deployment's env.
"""

__version__ = "0.1.0"
