"""Sampling inferers: ``inferer(image, network)`` runs a stochastic model S times and returns the mean class
probabilities, with the bundles' one uncertainty definition as an optional last channel.

- :mod:`common.inferers.sampling` -- :class:`~common.inferers.sampling.SamplingInferer` (the base: ``num_samples``,
  ``seed``, ``return_uncertainty``, ``with_uncertainty()``), ``foreground_variance``, ``split_uncertainty``.
- :mod:`common.inferers.ddim_sliding_window` -- latent DDIM chains per sliding window (TextDiffSeg).

The method-only subclasses live in their bundles: ``bundles/cdal/scripts/inferer.py`` (cDAL's few-step GAN
sampler) and ``bundles/textdiff/scripts/inferer.py`` (frozen diffusion features + text -> trained head).
"""
