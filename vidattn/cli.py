"""The `vidattn` command line. Thin by design: parse, build a config, call one function.

Every error a user can cause is a `VidattnError` (or a `click.ClickException`) and ends
as one line on stderr with a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import sys

import click

from vidattn import __version__
from vidattn.errors import VidattnError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vidattn")
def cli() -> None:
    """Video understanding with attention: train, key frames, tracking and archive scoring."""


# Commands are added below, one section each. Keep them thin: logic lives in vidattn.apps / vidattn.engine.


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the click group and turn user errors into one line."""
    try:
        rv = cli.main(args=argv, prog_name="vidattn", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except VidattnError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    # In non-standalone mode click returns the exit code of ctx.exit(); commands may return one too.
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
