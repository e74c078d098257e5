"""``python -m tts_operator`` runs the operator (same as ``kubetts-operator``)."""

from .cli import main

if __name__ == "__main__":
    main()
