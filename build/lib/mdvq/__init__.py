"""mdvq: generative modelling of radar micro-Doppler spectrograms."""
