"""The engine: resolves a model, picks a backend, runs the three stages and reports."""
