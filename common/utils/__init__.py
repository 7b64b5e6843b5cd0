"""Utilities for tools, benches and tests, not used by a bundle at run time.

- :mod:`common.utils.bundles` -- ``bundle_scripts``: import a bundle's ``scripts`` package from outside
  ``monai.bundle run`` (tests, :mod:`common.standins`, tools).
- :mod:`common.utils.profiling` -- measured matmul peak, FLOP counting that works with double backward, RSS/PSS.
"""
