"""DiffBoost bundle code (importable as ``scripts.*`` under ``monai.bundle run``): SD parts and ControlNet
(``sd_parts``), the ControlNet fine-tune step (``controlnet_training``), offline synthesis (``synthesis``), data
transforms (``transforms``), patch mixing (``mixing``), baseline vs
DiffBoost report (``compare``) and per-volume metrics of slice datalists (``volume_metrics``). The edge maps are
generic and live in ``scripts.edges``."""
