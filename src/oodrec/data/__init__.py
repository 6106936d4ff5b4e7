"""Interaction data: the shipped dataset registry, strict file reading and the in-memory dataset."""
