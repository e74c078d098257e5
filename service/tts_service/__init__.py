"""kubetts' text-to-speech service: an aiohttp API in front of a dynamic batcher and one engine."""

__version__ = "0.1.0"
