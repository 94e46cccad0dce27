"""Benchmarks: measured figures, never assertions (`bigtrain bench ...`). One module per
benchmark; `gpu` is the one-shot GPU report that runs several."""
