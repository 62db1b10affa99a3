"""transferlab's Hydra launcher plugin: joblib's local process pool, stopped cleanly by SIGTERM and SIGINT
(``hydra/launcher=parallel``; ``hydra/launcher=gpus`` builds on it).

Hydra only instantiates launchers that live under the ``hydra_plugins`` namespace package, hence this folder.
"""
