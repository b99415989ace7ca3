"""Whole models: workloads, presets and the xLSTMLarge adapter (the model runner is ``xlstm_kernels.runner``).

``workload`` (a model workload string), ``presets`` (small named models to tune and test on),
``xlstm_adapter`` (the ``xlstm`` package's xLSTMLarge on these kernels).
"""
