"""mer: multimodal emotion recognition for the MER challenges.

``python -m mer.run`` runs a track end to end (see README.md); ``mer.pipeline.run(cfg)`` is the
same from Python.
"""
__version__ = "0.1.0"

from mer.core.run_dirs import register_resolvers as _register_resolvers

_register_resolvers()
