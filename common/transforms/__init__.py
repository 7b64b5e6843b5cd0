"""MONAI dictionary transforms and the plain checks behind them.

- :mod:`common.transforms.checks` -- input checks (image arrays, labels, geometry, batches) and the checked loading
  transforms ``CheckedLoadImaged``, ``CheckImageLabeld``, ``CheckTextd``.
- :mod:`common.transforms.inference` -- inference transforms: case ids, default text, resize back to the input,
  uncertainty split, a ``Spacingd`` tolerant of MONAI Label's extra keys.
"""
