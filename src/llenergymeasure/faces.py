"""Errors in the words of the face that called: a message written for the CLI names its
flags (`--runner local`, `--yes`); the library API says the keyword argument instead, since
a library user has no flag to pass. Deep layers keep one message; the API translates it at
its boundary (api.py)."""

from __future__ import annotations

import re

from llenergymeasure.errors import LemError

LIBRARY_WORDS: dict[str, str] = {
    "--runner local": 'runner="local"',
    "--yes": "allow_large=True",
    "--no-wait-for-gpus": "wait_for_gpus=False",
    "--force-unlock": "force_unlock=True",
    "--retry-failed": "retry_failed=True",
    "-o/--output-dir": "the output_dir argument",
    "--output-dir": "the output_dir argument",
    "--gpus": "the gpus argument",
    "--timeout": "the timeout_s argument",
    "--retries": "the retries argument",
    "--cycles": "the cycles argument",
    "--order": "the order argument",
    "--runner": "the runner argument",
}
"""Each CLI flag a message may name, and the library's keyword argument for it."""
_FLAG = re.compile(
    "|".join(re.escape(flag) + r"(?![\w-])" for flag in sorted(LIBRARY_WORDS, key=len)[::-1])
)


def for_library(text: str) -> str:
    """text with each CLI flag replaced by the library's keyword argument."""
    return _FLAG.sub(lambda m: LIBRARY_WORDS[m.group(0)], text)


def in_library_words(error: LemError) -> LemError:
    """The same error (type, exit code, attributes kept) with its message in library words."""
    if error.args and isinstance(error.args[0], str):
        error.args = (for_library(error.args[0]), *error.args[1:])
    return error
