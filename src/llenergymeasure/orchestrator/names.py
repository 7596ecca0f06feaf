"""A campaign directory's own file names, named once in a module light enough for the CLI's
start (the manifest and lock modules load pydantic)."""

MANIFEST_FILE = "manifest.json"
EXPERIMENTS_FILE = "experiments.json"
LOCK_FILE = "lem.lock"
