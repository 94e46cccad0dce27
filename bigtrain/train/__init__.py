"""Training: config, phases, EMA, observability and the loop."""
