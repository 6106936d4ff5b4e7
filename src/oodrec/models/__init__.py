"""Recommender backbones."""
