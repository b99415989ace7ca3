"""Prefect flows and the ``xlstm-autotune`` command line.

Modules (imported on demand, so ``xlstm-autotune --help`` stays fast and nothing here loads Prefect
before it is needed): ``flows.flows`` (the ``autotune`` flow, ``run_autotune``, ``serve_deployment``),
``flows.tasks`` (its tasks and the seams to the tuner and profile publishing), ``flows.outcome``
(``WorkloadOutcome``, ``AutotuneResult``, artifact content), ``flows.server`` (which Prefect API; the
local server of ``serve``), ``flows.lock`` (one tuning run per machine), ``flows.schedule`` (the
re-validation rule of scheduled runs), ``flows.cli``.
"""
