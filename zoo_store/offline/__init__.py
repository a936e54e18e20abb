"""Offline tools of the zoo: the multi-objective NAS, its proxy training recipe, and pretraining.

Nothing in the runtime zoo (the store, the service, the worker side) imports this package.
"""
