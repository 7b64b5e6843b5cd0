"""Training and evaluation glue of TextDiffSeg for MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator``.

The trainer's iteration is MONAI's: ``pred = inferer(inputs, network, *args, **kwargs)`` then
``loss = loss_function(pred, targets)``. :class:`TextBatch` makes ``prepare_batch`` pass the label and the texts
as keyword arguments, :class:`TrainingForward` is the train-time "inferer" (text -> context, then the network's
training forward, ``bundles/textdiffseg/docs/sources.md`` §3 steps 1-4) and :class:`TextDiffSegLoss` is eqs 4-6:
``L = CE(y_hat, y) + gamma * Dice(y_hat, y) + lambda * MSE(eps_hat, eps)`` (MONAI ``DiceCELoss`` on the decoder
logits: ``lambda_ce=1``, ``lambda_dice=gamma``, background included, batch Dice; spec: gamma = 2, lambda = 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.losses import DiceCELoss
from scripts.network import TrainingOutput
from scripts.text import TextConditioner, check_text_mode

__all__ = ["TextBatch", "TextDiffSegLoss", "TrainingForward"]


class TextBatch:
    """``prepare_batch``: ``(image, label, (), {"text": [...], "case_ids": [...], ["label": label]})``.

    Args:
        pass_label: also give the label to the inferer (training: the label autoencoder encodes it).
        text_key, case_key: data keys.
    """

    def __init__(self, pass_label: bool = False, text_key: str = "text", case_key: str = "case_id") -> None:
        self.pass_label = pass_label
        self.text_key = text_key
        self.case_key = case_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: torch.device | str | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ):
        image = batchdata["image"].to(device=device, non_blocking=non_blocking, **kwargs)
        label = batchdata.get("label")
        if isinstance(label, torch.Tensor):
            label = label.to(device=device, non_blocking=non_blocking, **kwargs)
        kw: dict[str, Any] = {
            "text": _as_list(batchdata.get(self.text_key)),
            "case_ids": _as_list(batchdata.get(self.case_key)),
        }
        if self.pass_label:
            kw["label"] = label
        return image, label, (), kw


def _as_list(v: Any) -> list | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    return list(v)


class TrainingForward:
    """Train-time inferer: ``(image, network, label, text) -> TrainingOutput`` (text encoded by the conditioner).

    Args:
        conditioner: the :class:`scripts.text.TextConditioner`.
        text_from_batch: use the batch's texts (case texts or the class prompts chosen by ``RandPromptTargetd``)
            even when the conditioner is in dataset-prompt mode.
        class_prompts: the config's class prompts, checked against the conditioner's ``use_case_text``
            (:func:`scripts.text.check_text_mode`: both at once is an error, not a silent choice).
    """

    def __init__(
        self,
        conditioner: TextConditioner,
        text_from_batch: bool = False,
        class_prompts: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        check_text_mode(conditioner.use_case_text, class_prompts)
        self.conditioner = conditioner
        self.text_from_batch = bool(text_from_batch)

    def __call__(
        self,
        inputs: torch.Tensor,
        network: nn.Module,
        label: torch.Tensor | None = None,
        text: Sequence[Any] | None = None,
        case_ids: Sequence[Any] | None = None,
    ) -> TrainingOutput:
        if label is None:
            raise ValueError("TrainingForward needs the label (TextBatch(pass_label=True))")
        batch = inputs.shape[0]
        if self.text_from_batch:
            names = self.conditioner.names_for(batch, case_ids) if self.conditioner.use_case_text and text else None
            ctx, mask = self.conditioner.encode_sentences([[str(t)] for t in (text or [])] or [[""]], names)
        else:
            ctx, mask = self.conditioner.encode_sentences(
                self.conditioner.texts_for(text, batch, case_ids), self.conditioner.names_for(batch, case_ids)
            )
        return network(inputs, label.long(), ctx.to(inputs.device), mask.to(inputs.device))


class TextDiffSegLoss(nn.Module):
    """Eqs 4-6: ``CE + gamma * Dice`` on the decoded label (logits) + ``lambda * MSE`` on the noise.

    Args:
        gamma: weight of the Dice term (LDSeg: 2).
        lam: weight of the denoiser loss (LDSeg: 1).
    """

    def __init__(self, gamma: float = 2.0, lam: float = 1.0) -> None:
        super().__init__()
        self.seg = DiceCELoss(
            include_background=True, to_onehot_y=True, softmax=True, lambda_ce=1.0, lambda_dice=float(gamma), batch=True
        )
        self.lam = float(lam)

    def forward(self, pred: TrainingOutput, target: torch.Tensor) -> torch.Tensor:
        """pred: the network's training output; target: (B, 1, *spatial) class ids. Returns the scalar loss."""
        l1 = self.seg(pred.logits, target.long())
        l2 = torch.nn.functional.mse_loss(pred.noise_pred, pred.noise)
        return l1 + self.lam * l2
