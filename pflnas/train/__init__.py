"""Training loops: the loop owns data, optimizers, AMP and devices."""
