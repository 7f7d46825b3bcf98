"""The ``swinedge`` command line: a thin Typer layer over the library functions."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from swinedge import __version__
from swinedge.errors import SwinedgeError

app = typer.Typer(
    name="swinedge",
    help="Ship Swin Transformers to NVIDIA GPUs: build, export, quantize, compile, verify, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Print a user mistake as one line on stderr and exit 2; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SwinedgeError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: nothing was written")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"swinedge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    """Ship Swin Transformers to NVIDIA GPUs."""


@app.command()
@user_errors
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the model variants with parameters and GFLOPs at their resolution."""
    from swinedge.models import list_models

    rows = list_models()
    if as_json:
        print_json(rows)
        return
    table = Table(title="Swin Transformer variants", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True)
    for col in ("params", "GFLOPs", "res", "window"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", f"{r['gflops']:.2f}", str(r["img_size"]), str(r["window_size"]))
    out.print(table)


@app.command()
@user_errors
def build(
    model: str = typer.Argument(..., help="Variant name (see `swinedge models`)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (.pt or .safetensors); a manifest .json goes beside it."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="timm or official Microsoft checkpoint (.pth/.pt/.safetensors)."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classifier classes (default: the variant's)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Input resolution; a multiple of 32 needs no padding."),
    adapt: bool = typer.Option(False, "--adapt", help="Resize window bias tables and replace the head when they differ from the weights."),
    seed: int = typer.Option(0, "--seed", help="Seed for parameters not taken from --weights."),
) -> None:
    """Build a variant (optionally from pretrained weights) into a self-describing checkpoint."""
    from swinedge.models import build_checkpoint

    result = build_checkpoint(model, out_path, weights=weights, num_classes=num_classes, img_size=img_size, adapt=adapt, seed=seed)
    out.print(
        f"wrote {result['checkpoint']} ({result['params']:,} params, {result['model']}, "
        f"{result['config']['img_size']}px, {result['config']['num_classes']} classes) and {result['manifest']}",
        highlight=False,
    )


def run() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    run()
