"""``python -m tts_service`` runs the service (same as ``kubetts-service``)."""

from .app import main

if __name__ == "__main__":
    main()
