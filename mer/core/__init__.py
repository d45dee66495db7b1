"""mer's core: what every other layer may use and what uses nothing above it.

* :mod:`mer.core.registry` — name -> plugin registries with lazy discovery of their package;
* :mod:`mer.core.samples` — :class:`Sample`, :class:`LabelSpec` and the official class lists;
* :mod:`mer.core.failures` — :class:`ExtractionFailure` and :class:`MediaError`, the per-sample
  problems that never stop a batch;
* :mod:`mer.core.errors` — :class:`UserError` and ``run_cli``, the door every entry point shares;
* :mod:`mer.core.io` — files written whole or not at all;
* :mod:`mer.core.hashing` — canonical JSON, config keys and file digests;
* :mod:`mer.core.fingerprints` — content fingerprints of a sample's inputs;
* :mod:`mer.core.artifacts` — the entries of derived artifacts (face crops, transcripts,
  corrupted copies): items written whole, read verified, checked and repaired;
* :mod:`mer.core.redact` — credentials masked out of everything mer prints or logs.

The layers above (an import-linter contract in ``pyproject.toml`` holds them):
``mer.core`` < ``feature_extractors``, ``fusion``, ``submissions`` < ``mer.data``, ``mer.cache``,
``mer.training``... < ``mer.tracks`` < ``mer.pipeline`` < the entry points.
"""
