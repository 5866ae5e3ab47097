"""Research use of users' data: consent-gated sampling at job time, quasi-identifier
generalization, k-Same staging (``ksame/``), and dataset releases (``release/``).

Nothing is imported, built or loaded at import time: import the modules you need
(``worker.research.quasi``, ``worker.research.sampling``, ``worker.research.ksame.stager``, ...).
"""
