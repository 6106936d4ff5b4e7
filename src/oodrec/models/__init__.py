"""The networks of the methods (backbones, denoisers, encoders) and their loss terms."""
