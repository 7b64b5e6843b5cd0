"""Small helpers on ``torch.nn.Module`` objects shared by the networks, inferers, trainers and checkpoint loaders."""

from __future__ import annotations

import torch

__all__ = ["unwrap_network"]


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The module behind ``DataParallel`` / ``DistributedDataParallel`` / ``torch.compile`` wrappers.

    Loading weights, reading a network's attributes (``nz``, ``label_channels``, ``latent_shape``) and saving a
    state dict without ``module.`` prefixes all act on this module.
    """
    while True:
        if isinstance(network, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), torch.nn.Module):  # torch.compile's OptimizedModule
            network = network._orig_mod
        else:
            return network
