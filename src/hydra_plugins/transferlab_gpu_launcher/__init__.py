"""transferlab's Hydra launcher plugin: one sweep job per visible GPU (``hydra/launcher=gpus``).

Hydra only instantiates launchers that live under the ``hydra_plugins`` namespace package, hence this folder.
"""
