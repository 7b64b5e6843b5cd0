"""Text: the frozen text encoder (Clinical BioBERT by default, offline first) and the per-case prompts.

- :mod:`common.text.encoder` -- ``FrozenTextEncoder`` and its loaders (hub id, local folder, the demo's MiniLM).
- :mod:`common.text.prompts` -- ``resolve_texts`` (case text or a stated fallback), ``check_text``, token counts.
"""
