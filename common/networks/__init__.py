"""Networks shared by several bundles (the method-only ones live in their bundles' ``scripts/``).

- :mod:`common.networks.guided_diffusion` -- OpenAI's ADM UNet layout as MONAI's ``DiffusionModelUNet`` and the
  converter of OpenAI's checkpoints (TextDiff's frozen backbone; the ADM-layout UNet any bundle can pretrain).
- :mod:`common.networks.label_autoencoder` -- the 3D label autoencoder (TextDiffSeg's label embedding).
- :mod:`common.networks.cross_attention` -- masked cross-attention of 2D/3D feature maps over text tokens.
- :mod:`common.networks.inference_network` -- a bundle's ``inferer(image, network)`` as one ``nn.Module``.
- :mod:`common.networks.utils` -- ``unwrap_network`` (DDP / DataParallel / ``torch.compile`` wrappers).
"""
