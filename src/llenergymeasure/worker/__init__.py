"""`lem-worker exp.json`: runs one experiment cycle and writes result.json or error.json."""

import os

# Set before any engine imports huggingface_hub, which reads it once: a worker's output is a
# log file, where progress bars are carriage-return noise, and transformers' bars each take a
# multiprocessing lock (tqdm) whose semaphore a forked worker leaves to the resource tracker
# to clean up, with a "leaked semaphore" warning in every log. HF_HUB_DISABLE_PROGRESS_BARS=0
# in the environment keeps them.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
