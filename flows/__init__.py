"""Prefect flows and the ``xlstm-autotune`` command line (the run itself is the library's ``tuner.autotune``).

Modules (imported on demand, so ``xlstm-autotune --help`` stays fast and nothing here loads Prefect
before it is needed): ``flows.flows`` (the ``autotune`` flow over ``tuner.autotune``, ``run_autotune``,
``serve_deployment``), ``flows.model_flow`` (the ``model-autotune`` flow over ``tuner.autotune_model``),
``flows.tasks`` (``as_task``: each step of a run as a Prefect task run),
``flows.server`` (which Prefect API; the local server of ``serve``), ``flows.exits`` (exit codes and the
one error printer), ``flows.settings`` (the flows' settings: schedule, server, lock waits), ``flows.cli``.
"""
