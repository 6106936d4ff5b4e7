"""Training: the Trainer and its loop, starting and resuming run directories, records.

Calling the package, ``oodrec.train(dataset=...)``, is the Python API's ``oodrec.api.train``
(``oodrec/__init__.py`` makes the package callable).
"""
