"""The tuning database (sqlite-utils): machines, runs, workloads, trials, probes, profiles."""
