"""Tuned profiles and the runtime's config selection.

``fingerprint`` (the machine a profile is for), ``profile`` (the profile file: entries, versions,
atomic publish, rollback), ``runtime`` (the kernel config ``xk.mlstm`` uses for a call),
``model_profile`` (the run config a model uses).
"""
