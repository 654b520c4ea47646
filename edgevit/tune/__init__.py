"""`edgevit tune`: search a recipe's declared space (``search:``) for the pass stack that
meets a latency / size budget within an accuracy drop, every trial measured (accuracy on a
seeded split of the training images, latency from the device runner on the target, size
from the artifact), the study kept in Optuna storage.

Modules, one concept each: space (search space schema + applying a trial's values, no
torch / optuna), budget (the --budget grammar and feasibility), split (the validation split
of the training images), trial (one trial: recipe -> pre-check -> compress -> record),
locks (a device timed by one trial at a time), study (storage, study identity, resume),
workers (the ask/run/tell loop in this process or on Ray), cluster (starting / joining
Ray), output (Pareto plot + tables, chosen recipes), run (the command: check everything,
then run the study).

Importing this package imports nothing heavy: `edgevit validate` uses ``space``.
"""
