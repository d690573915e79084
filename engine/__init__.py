"""Partitur's engine: everything that is not HTTP (model, compiler, pure core, stores, runners)."""
