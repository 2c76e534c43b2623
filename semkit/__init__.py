"""semkit: self-supervised learning and particle segmentation for electron-microscopy images.

The package is deliberately thin: notebooks under ``notebooks/`` import it, call one function per step and
show the result. Sub-packages are organised by concept (``data``, ``metrics``, ``models``, ``ssl``, ``stem``,
``interpret``, ``batch``, ``plotting``); the single command-line entry point is ``semkit`` (``semkit.cli``).
"""

from semkit.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
