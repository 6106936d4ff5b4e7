"""Gaussian diffusion building blocks shared by CNSDiff, DMNS and the diffusion recommenders."""
