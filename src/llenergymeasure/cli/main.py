"""`lem`: run measurement campaigns from the shell.

Exit codes: 0 everything done; 1 some experiments failed (the rest finished); 2 bad input
(also: the campaign is locked by another orchestrator); 130 interrupted (finished results are
kept; `lem resume` continues).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from rich.markup import escape

# isort: off
from llenergymeasure.cli import run, resume, results, setup  # noqa: F401 (in `lem -h`'s order)

# isort: on
from llenergymeasure.cli.options import app, err
from llenergymeasure.errors import LemError, printable
from llenergymeasure.permissions import no_world_write


def cli(argv: Sequence[str] | None = None) -> int:
    """Run `lem ARGV` and return its exit code: a LemError or a usage error becomes one clear
    message on stderr (exit code 2 for bad input), never a traceback. Whatever it writes is
    not world-writable, whatever the umask."""
    try:
        with no_world_write():
            command = _plain_flags(typer.main.get_command(app))
            args = list(argv) if argv is not None else None
            code = command.main(args=args, prog_name="lem", standalone_mode=False)
    except LemError as e:
        # soft_wrap: a fix command in the message must stay one line to copy
        message = escape(printable(str(e)))
        err.print(f"[red]error[/]: {message}", highlight=False, soft_wrap=True)
        return e.exit_code
    except typer.TyperException as e:  # usage errors (typer vendors click): exit code 2
        show = getattr(e, "show", None)
        if show is not None:
            show()
        else:
            err.print(f"error: {escape(printable(e.format_message()))}", highlight=False)
        return e.exit_code
    except OSError as e:
        from llenergymeasure.storage import storage_message

        line = storage_message(e)
        if line is None:
            raise
        err.print(f"[red]error[/]: {escape(printable(line))}", highlight=False, soft_wrap=True)
        return 1
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        return 130
    return code if isinstance(code, int) else 0


def _plain_flags(command: Any) -> Any:
    """Show on/off flags as `--quiet`, not `--quiet <bool>`: a flag takes no value."""
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    make_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _plain_flags(sub)
    return command


def main() -> None:
    """Console entry point."""
    sys.exit(cli())
