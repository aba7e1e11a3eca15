"""The ``mpcompile`` command. Each subcommand lives in its own module and is imported on use.

User errors (``MpcompileError``, and click's usage errors) print exactly one ``error:`` line
and exit with code 2: a multi-line message is joined onto one line, warnings print as one
``warning:`` line each, and ONNX Runtime's own error log lines are silenced (its errors arrive
as the message). Anything else is a bug and keeps its traceback. Ctrl-C exits with 130 and
SIGTERM with 143, both after every ``with`` block has unwound (no staging folder is left behind).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from mpcompile._version import __version__
from mpcompile.errors import MpcompileError

#: command name -> (module, attribute, one-line help shown even if the module fails to import)
COMMANDS = {
    "compile": ("mpcompile.cli.compile_cmd", "compile_command", "Import, calibrate, plan and lower a model for every backend."),
    "calibrate": ("mpcompile.cli.calibrate_cmd", "calibrate_command", "Run calibration data through a model and write a plan."),
    "lower": ("mpcompile.cli.lower_cmd", "lower_command", "Lower a saved plan to one or more backends."),
    "conform": ("mpcompile.cli.conform_cmd", "conform_command", "Prove backends agree with the fake-quant reference."),
    "sensitivity": ("mpcompile.cli.sensitivity_cmd", "sensitivity_command", "Rank layers by the error quantizing them causes."),
    "inspect": ("mpcompile.cli.inspect_cmd", "inspect_command", "Show a model's or plan's structure and quantization."),
    "backends": ("mpcompile.cli.backends_cmd", "backends_command", "List installed backends and what they support."),
    "bench": ("mpcompile.cli.bench_cmd", "bench_command", "Time artifacts beside their FP32 model on the same backend."),
}


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs; a module that fails to import becomes a stub."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr, short = COMMANDS[name]
        try:
            return getattr(importlib.import_module(module_name), attr)
        except Exception as exc:  # keep the CLI alive: explain instead of crashing
            message = f"`mpcompile {name}` is unavailable: {type(exc).__name__}: {exc}"

            @click.command(name=name, help=f"{short}\n\n(unavailable: {exc})", context_settings={"ignore_unknown_options": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def stub(args: tuple[str, ...]) -> None:
                raise MpcompileError(message)

            stub.short_help = short
            return stub


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="mpcompile")
def cli() -> None:
    """mpcompile: one calibrated mixed-precision plan, lowered to every backend, verified.

    \b
    Typical flow:
      mpcompile compile model.onnx --data calib.npz -o out/     # all of it, one step
      mpcompile calibrate model.onnx --data calib.npz -o plan.onnx
      mpcompile inspect plan.onnx --explain
      mpcompile lower plan.onnx --backend tflite -o out/
      mpcompile conform plan.onnx --backend onnxruntime --backend tflite --data eval.npz

    Calibration data is an .npz whose keys are the model's input names (first axis =
    samples), a folder of .npy/.npz files, an image folder, or module:function.
    """


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt: it unwinds every ``with`` block."""


def _on_sigterm_raise() -> Callable[[], None]:
    """For the duration of ``main()``: SIGTERM raises ``Terminated`` (once). Returns what restores the old handler."""
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return lambda: None
    pid = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != pid:  # a forked worker: terminate as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM must not interrupt the cleanup
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def one_line(text: object) -> str:
    """A message on one line: its lines (a YAML error, a runtime's report) joined by "; "."""
    lines = [line.strip() for line in str(text).splitlines()]
    return "; ".join(line for line in lines if line) or type(text).__name__


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings as one ``warning:`` line each (not Python's two lines with the source line under them)."""
    click.echo(f"warning: {one_line(message)}", err=True)


def _quiet_runtime_logs(argv: list[str] | None) -> None:
    """ONNX Runtime writes its own error lines to stderr besides raising: mpcompile reports the error once.

    Only for the commands that run ORT anyway (``--help`` and ``backends`` stay light).
    """
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), None)
    if command not in COMMANDS or command == "backends" or any(a in ("-h", "--help") for a in args):
        return
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(4)  # fatal only
    except Exception:  # pragma: no cover - ORT missing or broken: the command will say so
        pass


def main(argv: list[str] | None = None) -> None:
    import warnings

    restore_sigterm = _on_sigterm_raise()
    previous_showwarning = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        _quiet_runtime_logs(argv)
        cli.main(args=argv, prog_name="mpcompile", standalone_mode=False)
    except MpcompileError as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # a bad option or argument: one line too, with where to look
        command = exc.ctx.command_path if exc.ctx is not None else "mpcompile"
        click.echo(f"error: {one_line(exc.format_message())} (see `{command} --help`)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("terminated (SIGTERM)", err=True)
        sys.exit(143)
    except BrokenPipeError:
        sys.exit(0)
    finally:
        warnings.showwarning = previous_showwarning
        restore_sigterm()
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
