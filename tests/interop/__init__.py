"""Interop tests: our client against the real OpenFL 1.6 director (marker ``interop``)."""
