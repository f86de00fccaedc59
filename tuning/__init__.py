"""Ray Tune sweeps of fine-tuning runs (``tuning.sweep``) and the report that reads their results (``tuning.report``)."""
