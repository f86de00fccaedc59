"""Ray Tune sweeps of fine-tuning runs: the sweep config (``config``), its trials (``trials``), the slots that bound
trials training at once (``slots``), the Tune experiments (``tuner``), and the entry points ``python -m tuning.sweep``
and ``python -m tuning.report``."""
