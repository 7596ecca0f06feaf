"""Measurement: energy sources and the facts recorded around the measured window."""
