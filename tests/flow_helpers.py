"""Shared by the flow and CLI tests: the workloads and the settings that narrow the REAL tuner's search
space (``tune_*`` settings, read by ``tuner.tune_workload``) to two candidates of ``tests/test_tuner.py``'s
workload - the default config and recurrent hpb2 T1 - so the flow adds no compile keys to the suite."""

from __future__ import annotations

GOOD = "1,2,16,8,8,float32,prefill"
UNBANDABLE = "1,3,16,8,8,float32,prefill"  # NH=3: heads_per_band 2 cannot band it, the tuner refuses it
NARROW_ENV = dict(TUNE_FAMILIES='["recurrent"]', TUNE_HEADS_PER_BAND="[2]", TUNE_T_INNERS="[1]",
                  TUNE_REPEATS="4", TUNE_WARMUP="1", TUNE_RETIME_ROUNDS="3",  # XLSTM_AUTOTUNE_<name>
                  SERVE_QUIET_WAIT_S="0")  # a scheduled run in a test never waits for the shared box to be quiet
