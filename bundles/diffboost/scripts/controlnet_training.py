"""Stage (b): fine-tune the ControlNet on the task's training slices (bundles/diffboost/docs/sources.md §2.3; paper
§III-C).

:class:`ControlNetIteration` is the ``iteration_update`` of a MONAI ``SupervisedTrainer`` whose ``network`` is the
ControlNet: one step of the standard latent-diffusion epsilon loss with the frozen SD parts
(diffusers ``examples/controlnet/train_controlnet.py`` convention, which matches the authors' LDM code):

    z0 = VAE.encode(x).sample() * scaling_factor          x: the slice in [-1, 1], replicated to 3 channels
    t ~ U{0..T-1},  eps ~ N(0, I),  zt = add_noise(z0, eps, t)   (DDPM, scaled-linear betas, T = 1000)
    (down, mid) = ControlNet(zt, t, CLIP(prompt), hint)   hint: the edge map in [0, 1], replicated to 3 channels
    loss = || UNet(zt, t, CLIP(prompt), + down, + mid) - eps ||^2

Only the ControlNet receives gradients (VAE, UNet and text encoder frozen: ``sd_locked=True``); the prompt is always
given (no prompt dropout), as in the authors' code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from common.errors import BadInputError
from common.text.prompts import resolve_texts

__all__ = ["PromptEncoder", "ControlNetIteration"]


class PromptEncoder:
    """Frozen CLIP text embeddings ``(B, 77, D)`` of prompts, cached per distinct prompt (the prompts of a task repeat).

    Args:
        tokenizer, text_encoder: the SD v1.5 CLIP tokenizer/encoder (last hidden state, 77 tokens, as the LDM
            ``FrozenCLIPEmbedder``).
    """

    def __init__(self, tokenizer: Any, text_encoder: Any) -> None:
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            ids = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            enc_device = next(self.text_encoder.parameters()).device
            emb = self.text_encoder(ids.to(enc_device))[0].cpu()
            self._cache.update(zip(missing, emb))
        return torch.stack([self._cache[p] for p in prompts]).to(device)


class ControlNetIteration:
    """``iteration_update(engine, batch)`` for a ``SupervisedTrainer`` training a diffusers ControlNet.

    Args:
        sd_parts: :class:`scripts.sd_parts.StableDiffusionParts` (frozen VAE/UNet/text encoder + DDPM scheduler).
        image_key, edge_key, text_key: batch keys: ``image`` ``(B, 1, H, W)`` in [-1, 1], ``edge`` ``(B, 1, H, W)``
            in [0, 1], ``text`` list of B prompts.
        default_text: prompt for cases without ``text`` (``None`` = such a case is an error naming it).
        case_key: batch key of the case ids named in errors.

    Returns per iteration ``[{"loss": tensor}]`` (``engine.state.output``, shaped as a decollated MONAI trainer
    output), so ``common.training.LossOutput`` and MONAI's ``from_engine(["loss"], first=True)`` (the default of
    ``--tracking mlflow``) both read it.
    """

    def __init__(
        self,
        sd_parts: Any,
        image_key: str = "image",
        edge_key: str = "edge",
        text_key: str = "text",
        default_text: str | None = None,
        case_key: str = "case_id",
    ) -> None:
        self.sd = sd_parts
        self.image_key, self.edge_key, self.text_key = image_key, edge_key, text_key
        self.default_text = default_text
        self.case_key = case_key
        self.prompts = PromptEncoder(sd_parts.tokenizer, sd_parts.text_encoder)

    def _texts(self, batch: Mapping[str, Any], n: int) -> list[str]:
        """The prompt of each of the ``n`` cases: its ``text``, else ``default_text``, else a
        :class:`BadInputError` naming the case (``common.text.prompts.resolve_texts``)."""
        case_ids = batch.get(self.case_key)
        if isinstance(case_ids, str):
            case_ids = [case_ids]
        if case_ids is not None and len(case_ids) != n:
            case_ids = None
        return resolve_texts(batch.get(self.text_key), n, self.default_text, case_ids)

    def loss(self, controlnet: torch.nn.Module, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
        """The epsilon-MSE of one batch (gradients flow into ``controlnet`` only)."""
        x = torch.as_tensor(batch[self.image_key]).float().to(device)
        hint = torch.as_tensor(batch[self.edge_key]).float().to(device)
        if x.ndim != 4 or hint.shape[-2:] != x.shape[-2:]:
            raise BadInputError(
                "batch", f"image {tuple(x.shape)} and edge {tuple(hint.shape)} must be (B, C, H, W) alike"
            )
        x3 = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        hint3 = hint.expand(-1, 3, -1, -1) if hint.shape[1] == 1 else hint
        ctx = self.prompts(self._texts(batch, x.shape[0]), device)
        with torch.no_grad():
            z0 = self.sd.vae.encode(x3).latent_dist.sample() * self.sd.vae.config.scaling_factor
        noise = torch.randn_like(z0)
        t = torch.randint(0, self.sd.noise_scheduler.config.num_train_timesteps, (z0.shape[0],), device=device).long()
        zt = self.sd.noise_scheduler.add_noise(z0, noise, t)
        down, mid = controlnet(zt, t, encoder_hidden_states=ctx, controlnet_cond=hint3, return_dict=False)
        eps = self.sd.unet(
            zt, t, encoder_hidden_states=ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
        return F.mse_loss(eps.float(), noise.float())

    def __call__(self, engine: Any, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(engine.network, batch, engine.state.device)
        loss.backward()
        engine.optimizer.step()
        return [{"loss": loss.detach()}]
