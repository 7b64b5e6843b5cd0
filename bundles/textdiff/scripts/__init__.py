"""TextDiff bundle code a config cannot say: frozen diffusion features (``diffusion_features``), their on-disk
cache (``feature_cache``), the trainable text-guided head (``text_guided_head``) and the inferer that joins them
(``inferer``). The ADM UNet itself is shared (``common.networks.guided_diffusion``)."""
