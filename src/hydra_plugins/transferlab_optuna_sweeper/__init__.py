"""transferlab's Hydra sweeper plugin: Optuna studies that persist in SQLite and resume to ``n_trials``.

Hydra only instantiates sweepers that live under the ``hydra_plugins`` namespace package, hence this folder.
"""
