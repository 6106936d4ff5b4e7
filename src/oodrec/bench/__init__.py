"""Benchmark grids: expand a grid file into runs, execute them resumably, and report.

``grid`` (spec and expansion), ``runner`` (local and Ray executors), ``report`` (tables) and
``plots`` (figures, matplotlib imported lazily). Nothing is imported here, so that importing
``oodrec.bench`` stays cheap.
"""
