"""Party state machines (PSI, vertical LR, ...): pure Python, transport-agnostic.

Nothing here imports Flower: the same party objects run over an in-process loop
(tests, notebooks) and over Flower (simulation or deployment engine).
"""
