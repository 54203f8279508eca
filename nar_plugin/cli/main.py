"""The ``nar`` command line: the root group, the one error table and :func:`main`.

Every command prints human text by default and JSON with ``--json``. An error raised while a
command runs becomes one line on stderr and the exit code of :data:`ERROR_TABLE` (2: bad input,
3: not found, 4: blocked duplicate, 1: other); ``NAR_DEBUG=true`` also prints the traceback.
Usage errors (unknown option, missing argument) are click's: usage and message, exit code 2.
An optional dependency that is missing (an extra not installed) is reported with the
``pip install 'nar-plugin[extra]'`` line, however deep the import that failed.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from nar_plugin import errors
from nar_plugin.cli.options import wide_option

__all__ = ["ERROR_TABLE", "nar", "main", "report_error"]

#: exception type -> (exit code, prefix of the message line); the first match wins
ERROR_TABLE: list[tuple[type[BaseException], int, str]] = [
    (errors.DuplicateModelError, 4, "duplicate"),
    (errors.KeyNotFoundError, 3, "not found"),
    (errors.IndexReadOnlyError, 2, "read-only index"),
    (errors.KeyExistsError, 2, "key exists"),
    (errors.InvalidQueryError, 2, "invalid input"),
    (errors.TrackingUnavailableError, 1, "tracking server unavailable"),
    (errors.MissingDependencyError, 2, "missing dependency"),
    (errors.ConfigError, 2, "configuration"),
    (errors.ExampleInputsError, 2, "inputs"),
    (errors.UnsupportedModelError, 2, "unsupported"),
    (errors.CorruptArtifactError, 2, "corrupt"),
    (errors.IndexCorruptError, 2, "index corrupt"),
    (errors.IndexLockedError, 1, "index busy"),
    (errors.IndexWriteError, 1, "index write failed"),
    (errors.BudgetExceededError, 2, "over budget"),
    (errors.GraphTooLargeError, 2, "graph too large"),
    (errors.EncoderVersionMismatchError, 2, "encoder mismatch"),
    (errors.GraphExtractionError, 1, "extraction failed"),
    (errors.NarError, 1, "error"),
    (FileNotFoundError, 3, "not found"),
    (ValueError, 2, "invalid input"),
]

#: exit code of a run stopped with Ctrl-C (128 + SIGINT)
INTERRUPTED = 130


def _debug() -> bool:
    from nar_plugin.config import NAR_DEBUG

    try:
        return NAR_DEBUG.get()
    except errors.ConfigError:  # a bad NAR_DEBUG must not hide the error being reported
        return False


def _missing_extra(e: BaseException) -> BaseException:
    """``e`` as a :class:`~nar_plugin.errors.MissingDependencyError` when it is a bare
    ``ModuleNotFoundError`` for an optional dependency that is not installed, else ``e``."""
    if not isinstance(e, ModuleNotFoundError) or isinstance(e, errors.NarError) or not e.name:
        return e
    from nar_plugin.utils.deps import EXTRAS, is_available

    top = e.name.split(".", 1)[0]
    if top not in EXTRAS or is_available(top):
        return e  # an installed package missing one of *its* modules: not ours to explain
    return errors.MissingDependencyError(top, EXTRAS[top])


def report_error(e: BaseException) -> int:
    """Print the one-line message of ``e`` on stderr (and its traceback with ``NAR_DEBUG``) and
    return its exit code from :data:`ERROR_TABLE` (1 for anything not listed)."""
    debug = _debug()
    if debug:
        traceback.print_exception(e, file=sys.stderr)
    e = _missing_extra(e)
    text = " ".join(str(e).split())  # one line, even when a tracer's message spans several
    for etype, code, prefix in ERROR_TABLE:
        if isinstance(e, etype):
            click.echo(f"nar: {prefix}: {text}", err=True)
            return code
    hint = "" if debug else " (set NAR_DEBUG=true for the traceback)"
    click.echo(f"nar: unexpected {type(e).__name__}: {text}{hint}", err=True)
    return 1


class NarGroup(click.Group):
    """The root group: runs every command inside the CLI's one error boundary."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # usage errors, --help, explicit exits: click reports them
        except KeyboardInterrupt:
            click.echo("nar: interrupted", err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None
        except Exception as e:  # noqa: BLE001 - the CLI's error boundary
            raise click.exceptions.Exit(report_error(e)) from e


@click.group(cls=NarGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(None, "--version", package_name="nar-plugin", prog_name="nar-plugin",
                      message="%(prog)s %(version)s", help="show the version and exit")
@wide_option
def nar() -> None:
    """Neural Architecture Retrieval for MLflow and the HF Hub.

    Indexes live in $NAR_HOME/index (a read-only folder is opened read-only: queries work).
    MLflow ids (run ids, model ids, models:/ URIs) are looked up on MLFLOW_TRACKING_URI.
    """
    import warnings

    # torch_geometric still calls torch.jit.script at import; the deprecation is not the user's
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")


def _add_commands() -> None:
    from nar_plugin.cli import apps, index, lineage, model, search, serve, training

    for cmd in (*model.COMMANDS, *search.COMMANDS, *lineage.COMMANDS, *apps.COMMANDS, *training.COMMANDS,
                index.index, serve.serve):
        nar.add_command(cmd)


_add_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nar`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    Example:
        >>> main(["graph", "resnet18", "--json"])
        0
    """
    try:
        rv = nar.main(args=list(argv) if argv is not None else None, prog_name="nar", standalone_mode=False)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:  # Ctrl-C while click itself was parsing or prompting
        click.echo("nar: interrupted", err=True)
        return INTERRUPTED
    finally:
        _close_index_handles()
    return rv if isinstance(rv, int) else 0  # ctx.exit(code) comes back as the int


def _close_index_handles() -> None:
    """Close the process-wide index handles the command opened, as the end of a process would:
    ``main`` may run many commands in one process (tests, notebooks), and each must see the
    index as it is on disk. Only when the index was loaded: ``nar --help`` must not import FAISS."""
    handles = sys.modules.get("nar_plugin.index.handles")
    if handles is not None:
        handles.close_all()
