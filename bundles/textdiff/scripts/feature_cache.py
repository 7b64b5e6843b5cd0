"""On-disk, memory-mapped cache of the outputs of frozen networks (diffusion-UNet features, text tokens).

Methods that train a small head on top of frozen encoders (TextDiff: a 552 M-parameter diffusion UNet run at 3
steps, and a BERT) recompute the same features every epoch. With a deterministic extractor (fixed noise, eval mode)
and no image augmentation, the features of an image are a pure function of the image and the extractor settings,
so they can be computed once and read back. Each entry is a list of tensors stored as ``.npy`` files (one per
tensor, ``<folder>/<key>/<i>.npy``, written atomically) and read with ``numpy.load(mmap_mode="r")``, so only the
pages that are used are read and the OS page cache is shared between processes and epochs.

A ``fingerprint`` (e.g. :meth:`scripts.diffusion_features.DiffusionFeatureExtractor.fingerprint` + preprocessing
settings) is stored in ``<folder>/fingerprint.json``; opening a cache built with other settings raises
:class:`~common.errors.BadInputError` instead of serving stale features.

Entries are keyed by the content of the network input, not by the case id alone (:meth:`FeatureCache.entry_key`:
``<case_id>-<hash of the input tensor>@<draw>``): when the image behind a case id changes (re-exported, corrected,
another dataset under the same ids), its features are computed anew instead of being served stale.

Not valid with random augmentation of the input (the cached features are those of the un-augmented image).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from common.errors import BadInputError
from common.io.atomic import atomic_path, atomic_write_json

__all__ = ["FeatureCache"]

_SAFE = re.compile(r"[^A-Za-z0-9._@=-]")


class FeatureCache:
    """Memory-mapped cache ``key -> list of tensors`` under ``folder`` (see module docstring).

    Args:
        folder: cache folder (created).
        fingerprint: string identifying the producer's settings; must match the one stored in the folder.
        dtype: storage dtype (``"float16"`` halves disk and read volume; ``"float32"`` exact).
        mmap: read with ``numpy.load(mmap_mode="r")`` (else load fully).

    Example::

        cache = FeatureCache("cache/textdiff", fingerprint=extractor.fingerprint())
        key = cache.entry_key(case_id, x[0])
        feats = cache.get(key) or cache.put(key, [f[0] for f in extractor(x)])
    """

    def __init__(self, folder: str | PathLike, fingerprint: str, dtype: str = "float32", mmap: bool = True) -> None:
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
        self.folder = Path(folder)
        self.fingerprint = str(fingerprint)
        self.dtype = dtype
        self.mmap = bool(mmap)
        self.hits = 0
        self.misses = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / "fingerprint.json"
        meta = {"fingerprint": self.fingerprint, "dtype": dtype}
        if meta_path.is_file():
            try:
                stored = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise BadInputError(meta_path, f"unreadable cache fingerprint ({e}); delete the cache folder") from e
            if stored != meta:
                raise BadInputError(
                    self.folder,
                    f"feature cache built with other settings (stored {stored}, now {meta}); delete the folder or "
                    "point the cache at another one",
                )
        else:
            atomic_write_json(meta_path, meta)

    @staticmethod
    def entry_key(case_id: str, tensor: torch.Tensor, draw: int = 0) -> str:
        """``<case_id>-<16 hex digits>@<draw>``: the digest (BLAKE2b) covers ``tensor``'s dtype, shape and values, so
        another image under the same case id is another entry. About 1 ms per 3 x 256 x 256 float32 input."""
        array = tensor.detach().to("cpu").contiguous().numpy()
        digest = hashlib.blake2b(digest_size=8)
        digest.update(f"{array.dtype}{tuple(array.shape)}".encode())
        digest.update(array.tobytes())
        return f"{case_id}-{digest.hexdigest()}@{int(draw)}"

    def _dir(self, key: str) -> Path:
        name = _SAFE.sub("_", str(key))
        if name != str(key) or len(name) > 120:  # keep distinct keys distinct after sanitising
            name = name[:80] + "-" + hashlib.sha1(str(key).encode()).hexdigest()[:12]
        return self.folder / name

    def __contains__(self, key: str) -> bool:
        return (self._dir(key) / "count.json").is_file()

    def put(self, key: str, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Store ``tensors`` (any shapes) under ``key``; returns them unchanged (float32 on their device)."""
        d = self._dir(key)
        d.mkdir(parents=True, exist_ok=True)
        for i, t in enumerate(tensors):
            with atomic_path(d / f"{i}.npy", durable=False) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, t.detach().to("cpu", torch.float32).numpy().astype(self.dtype))
        atomic_write_json(d / "count.json", {"count": len(tensors)}, durable=False)  # written last: entry complete
        self.misses += 1
        return list(tensors)

    def get(self, key: str) -> list[torch.Tensor] | None:
        """The tensors stored under ``key`` (float32, CPU), or ``None`` if absent."""
        d = self._dir(key)
        count_file = d / "count.json"
        if not count_file.is_file():
            return None
        try:
            n = int(json.loads(count_file.read_text())["count"])
            arrays = [np.load(d / f"{i}.npy", mmap_mode="r" if self.mmap else None) for i in range(n)]
        except (OSError, ValueError, KeyError) as e:
            raise BadInputError(d, f"corrupt feature cache entry ({e}); delete this folder to recompute it") from e
        self.hits += 1
        return [torch.from_numpy(np.array(a, dtype=np.float32)) for a in arrays]
