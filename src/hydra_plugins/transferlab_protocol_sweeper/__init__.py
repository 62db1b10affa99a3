"""transferlab's protocol sweeper: ``protocol=tuned`` tunes every arm of a sweep on validation, then refits and tests.

Hydra only instantiates sweepers that live under the ``hydra_plugins`` namespace package, hence this folder.
"""
