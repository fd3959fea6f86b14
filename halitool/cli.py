"""The ``halitool`` command line: the Click group, global options, and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
import traceback

import click

from halitool import settings
from halitool.commands.common import AppContext
from halitool.commands.console import make_console
from halitool.errors import ExitCode, HalitoolError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "HALITOOL", "show_default": True}


# Every command: its name -> (module, object). A command's module (and whatever that imports) loads when the
# command runs or a help page lists it; `halitool inspect` does not pay for train's options.
COMMANDS = {
    "data": ("halitool.commands.data", "data_group"),
    "train": ("halitool.commands.train", "train_command"),
    "info": ("halitool.commands.info", "info_command"),
    "extract": ("halitool.commands.extract", "extract_command"),
    "inspect": ("halitool.commands.extract", "inspect_command"),
    "semisup": ("halitool.commands.semisup", "semisup_command"),
    "predict": ("halitool.commands.predict", "predict_command"),
    "cluster": ("halitool.commands.cluster", "cluster_command"),
    "probe-attributes": ("halitool.commands.probe", "probe_attributes_command"),
    "disentanglement": ("halitool.commands.disentanglement", "disentanglement_command"),
    "reconstruct": ("halitool.commands.visualize", "reconstruct_command"),
    "sample": ("halitool.commands.visualize", "sample_command"),
    "interpolate": ("halitool.commands.visualize", "interpolate_command"),
}


class LazyGroup(click.Group):
    """A group whose commands (``COMMANDS``) are imported on first use; otherwise a plain click.Group."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, name = COMMANDS[cmd_name]
            # __import__ rather than importlib.import_module: `python -X importtime` then shows what it costs.
            self.add_command(getattr(__import__(module, fromlist=[name]), name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in COMMANDS:  # a typo: Click's "Did you mean" draws on the loaded commands
            for name in COMMANDS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from halitool.runtime import library_versions

    for name, version in library_versions().items():
        click.echo(f"{name} {version}")
    ctx.exit()


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the versions of halitool, Python, torch (CUDA), h5py/HDF5, scikit-learn.")
@click.option("-q", "--quiet", is_flag=True, help="No progress or logs on stderr (data and errors still appear).")
@click.option("-v", "--verbose", is_flag=True, help="More logs; a traceback with errors.")
@click.option("--color/--no-color", default=None, help="Colour on stderr [default: on a terminal, off with NO_COLOR].")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: bool, color: bool | None):
    """Train, inspect and evaluate hierarchical adversarially learned inference (HALI) models.

    Data goes to stdout; tables, logs and progress go to stderr. Every option can also be set as an
    environment variable HALITOOL_<COMMAND>_<OPTION> (for example HALITOOL_EXTRACT_BATCH_SIZE).

    \b
    Examples:
      halitool data fetch mnist
      halitool info hali-mnist
      halitool extract hali-mnist --data mnist -o features.h5
      halitool semisup --labels 100
    """
    ctx.obj = AppContext(console=make_console(color=color, quiet=quiet, verbose=verbose), verbose=verbose, quiet=quiet)


def _wants_traceback(argv: list[str]) -> bool:
    ctx_obj = getattr(click.get_current_context(silent=True), "obj", None)
    if isinstance(ctx_obj, AppContext):
        return ctx_obj.verbose
    flags = {"-v", "--verbose"}
    return any(a in flags for a in argv) or settings.verbose()


def _error(message: str) -> None:
    # A plain write, not the rich console: one unwrapped line whatever the terminal width.
    click.echo(f"{click.style('Error:', fg='red', bold=True)} {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map every failure to its documented exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=argv, prog_name="halitool", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else ExitCode.OK)
    except HalitoolError as exc:
        if _wants_traceback(argv):
            traceback.print_exc()
        _error(str(exc))
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        _error("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # bad options: Click's message as our one Error line, exit 2
        command = exc.ctx.command_path if exc.ctx is not None else "halitool"
        _error(f"{exc.format_message()} (see '{command} --help')")
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # The reader of our stdout went away (`| head`): not our failure. Silence the final flush.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(ExitCode.FAILURE)
    except Exception as exc:  # noqa: BLE001  anything unforeseen: one line, traceback only with -v
        if _wants_traceback(argv):
            traceback.print_exc()
        _error(f"{type(exc).__name__}: {exc}" + ("" if _wants_traceback(argv) else " (run with -v for a traceback)"))
        sys.exit(ExitCode.FAILURE)
