"""Each face words an error's options (errors.Option) in its own terms: the CLI names its
flags (`--runner local`, `--yes`), the library API its keyword arguments (`runner="local"`,
`allow_large=True`), since a library user has no flag to pass."""

from __future__ import annotations

from llenergymeasure.errors import LemError, Option

CLI_FLAGS: dict[str, str] = {
    "allow_large": "--yes",
    "output_dir": "--output-dir",
    "timeout_s": "--timeout",
}
"""Option keys whose CLI flag is not simply --<key> (a False boolean: --no-<key>)."""


def cli_flag(key: str) -> str:
    return CLI_FLAGS.get(key, "--" + key.replace("_", "-"))


def cli_words(option: Option) -> str:
    """`--runner local`, `--yes`, `--no-wait-for-gpus`, `--gpus`."""
    if option.value is False:
        return "--no-" + option.key.replace("_", "-")
    if option.value is None or option.value is True:
        return cli_flag(option.key)
    return f"{cli_flag(option.key)} {option.value}"


def library_words(option: Option) -> str:
    """`runner="local"`, `allow_large=True`, `the gpus argument`."""
    if option.value is None:
        return f"the {option.key} argument"
    value = f'"{option.value}"' if isinstance(option.value, str) else repr(option.value)
    return f"{option.key}={value}"


def in_library_words(error: LemError) -> LemError:
    """The same error (type, exit code, attributes kept) with its options in library words."""
    if error.options:
        error.args = (error.worded(library_words), *error.args[1:])
        error.options = ()
    return error
