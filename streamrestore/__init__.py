"""streamrestore: real-time video restoration with a one-step IR-CM consistency model."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Restorer", "__version__"]


def __getattr__(name: str):
    # Lazy: `import streamrestore` stays cheap; torch loads only when a Restorer is asked for.
    if name == "Restorer":
        from streamrestore.restorer import Restorer

        return Restorer
    raise AttributeError(name)
