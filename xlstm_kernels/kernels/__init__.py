"""The mLSTM pseudo-kernels and what runs them.

``config`` (kernel configs and workloads), ``families`` (the recurrent, chunkwise and step blocks),
``reference`` (the float64 reference and validation inputs), ``inputs`` (random inputs of a workload),
``compiler`` (the compile cache), ``drivers`` (bands, tiles, the call plan), ``fastpath`` (repeat calls
served by one compiled graph), ``capture`` (whole-call CUDA graphs), ``shrink`` (out-of-memory retries),
``validation`` (input checks and memory estimates).
"""
