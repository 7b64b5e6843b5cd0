"""A bundle's whole inference (``inferer(image, network)``) as one ``torch.nn.Module`` with ``forward(image)``.

The model zoo's ``monai.bundle verify_net_in_out`` and any caller that expects "a network that maps an image batch
to a prediction" take a single ``nn.Module`` called as ``net(image)``. A diffusion bundle's
``network_def`` cannot be called that way: it needs timesteps, a noisy input, text embeddings or a latent code, and
its prediction is the result of a sampling loop that lives in the bundle's ``inferer`` (bundles/README.md, "One
interface"). :class:`InferenceNetwork` closes over both, so every bundle can expose

.. code-block:: json

    "inference_network": {"_target_": "common.networks.inference_network.InferenceNetwork",
                          "network": "@network", "inferer": "@inferer"}

and the zoo's ``verify_net_in_out --net_id inference_network`` checks the full pipeline's input and output against
``metadata.json``. MONAI Label and ``monai.bundle run`` keep using ``network_def`` + ``inferer`` directly. It is not
for ``ckpt_export``: its state dict prefixes the network's keys with ``network.`` and a sampling loop is not
TorchScript (the zoo lists its own generative bundles as not exportable too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["InferenceNetwork", "first_tensor"]


def first_tensor(output: Any, key: str = "pred") -> torch.Tensor:
    """The prediction tensor inside an inferer output: the tensor itself, ``output[key]`` of a mapping (else its
    first value), or the first element of a tuple/list.

    Raises:
        TypeError: when no tensor can be found (the message names the type that came back).
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and output:
        return first_tensor(output[key] if key in output else next(iter(output.values())), key)
    if isinstance(output, Sequence) and not isinstance(output, (str, bytes)) and len(output) > 0:
        return first_tensor(output[0], key)
    raise TypeError(f"the inferer returned {type(output).__name__}, which holds no prediction tensor")


class InferenceNetwork(nn.Module):
    """``forward(image) = inferer(image, network)``: a bundle's sampling pipeline behind one module.

    Args:
        network: the bundle's ``network`` (its weights are this module's parameters, so ``.to(device)``,
            ``.eval()`` and ``state_dict()`` act on them).
        inferer: callable ``(inputs, network) -> prediction`` (a MONAI ``Inferer`` or the bundle's sampler).
            Its own settings (number of samples, steps, default text prompt, seed) apply unchanged.
        pred_key: the entry of a dict output taken as the prediction.

    Shapes:
        ``image``: ``(B, C_in, *spatial)`` as in ``metadata.json``'s ``network_data_format.inputs.image``;
        returns ``(B, C_out, *spatial)`` as in ``outputs.pred``.
    """

    def __init__(self, network: nn.Module, inferer: Callable[..., Any], pred_key: str = "pred") -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if not callable(inferer):
            raise TypeError(f"inferer must be callable as inferer(image, network), got {type(inferer).__name__}")
        self.network = network
        self.inferer = inferer
        self.pred_key = pred_key

    def forward(self, image: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return first_tensor(self.inferer(image, self.network, *args, **kwargs), self.pred_key)
