"""The Dramatiq worker: its runtime (runtime.py) and its actors (actors.py, the module `dramatiq` runs).

Importing this package has no effect; importing `lexia.worker.actors` sets up the broker.
"""
