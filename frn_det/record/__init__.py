"""A run's record on disk, what the sweep writes and the report reads: metrics.json and the
other files of a run folder, statuses and the rule that a run is done (metrics.py), its
event log (events.py) and the machine it ran on (machine.py)."""
