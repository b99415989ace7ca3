"""The tuning database (sqlite-utils): machines, runs, workloads, trials, probes, profiles.

    from storage import open_db
    with open_db() as db:                      # HOME/tuning.db from settings
        best = db.best(Workload.parse("1,4,512,64,64,float32"), machine_id)
"""

from ._db import RUN_STATUSES, TRIAL_STATUSES, BestConfig, TuningDB, config_key, open_db, query_best
from ._db import pid_alive, this_machine_id, using_db
from ._errors import DatabaseUnavailable, NoTunedConfig, NotADatabase, SchemaTooNew, StorageError, UnknownRun
from ._metadata import column_description, datasette_metadata
from ._model_db import BestModelConfig, best_model, kernel_winners, model_trials, record_model_result
from ._model_db import record_model_trial
from ._schema import SCHEMA_VERSION

__all__ = [
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "TRIAL_STATUSES",
    "BestConfig",
    "BestModelConfig",
    "DatabaseUnavailable",
    "NoTunedConfig",
    "NotADatabase",
    "SchemaTooNew",
    "StorageError",
    "TuningDB",
    "UnknownRun",
    "best_model",
    "column_description",
    "config_key",
    "datasette_metadata",
    "kernel_winners",
    "model_trials",
    "open_db",
    "pid_alive",
    "query_best",
    "record_model_result",
    "record_model_trial",
    "this_machine_id",
    "using_db",
]
