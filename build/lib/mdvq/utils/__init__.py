"""Small shared helpers: plotting with physical axes, loggers, command-line parsing."""
