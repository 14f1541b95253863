"""Models of V1 responses: cores, readouts, the Kindel et al. network, fitting, checkpoints."""
