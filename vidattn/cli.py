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


# --- probe --------------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.option("--backend", type=click.Choice(["auto", "decord", "pyav"]), default="auto", show_default=True)
def probe(paths: tuple[str, ...], as_json: bool, backend: str) -> int:
    """Print container, codec, size, frames, fps, duration and backend of each video.

    A bad file gets one error line on stderr; the others are still probed, and the exit code is 1.

    \b
    Examples:
      vidattn probe clip.mp4
      vidattn probe videos/*.mp4 --json
    """
    from vidattn.apps.probe import run_probe

    failures = run_probe(paths, as_json=as_json, backend=backend, out=click.echo,
                         err=lambda line: click.echo(line, err=True))
    return 1 if failures else 0


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
