"""`lem-worker exp.json`: runs one experiment cycle and writes result.json or error.json."""
