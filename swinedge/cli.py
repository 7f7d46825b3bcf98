"""The ``swinedge`` command line: a thin Typer layer over the library functions."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from swinedge import __version__
from swinedge.defaults import DEFAULT_KEEP_FP32_FOR_FP16, DEFAULT_KEEP_HIGH_PRECISION, MAX_TOP1_DROP, MIN_COSINE
from swinedge.errors import SwinedgeError, os_error_message, os_error_text

try:  # typer >= 0.20 parses with its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as click_errors  # type: ignore[no-redef]

# Options whose empty value means something ("--keep-high-precision ''": keep none).
EMPTY_ALLOWED = {"--keep-high-precision"}


class OneLineErrors(TyperGroup):
    """Usage mistakes (a bad number, an unknown option, a missing argument, an empty
    value) print one ``error:`` line and exit 2, like every other user mistake, instead
    of click's usage box."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            _refuse_empty_values(argv)
            _refuse_undecodable_names(argv)
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as e:
            e.show()
            sys.exit(e.exit_code)
        except click_errors.ClickException as e:
            where = f" (see '{e.ctx.command_path} --help')" if isinstance(e, click_errors.UsageError) and e.ctx is not None else ""
            err.print(f"[bold red]error:[/] {escape(e.format_message())}{escape(where)}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except (click_errors.Abort if hasattr(click_errors, 'Abort') else typer.Abort):
            err.print("interrupted")
            sys.exit(130)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _refuse_empty_values(argv: list[str]) -> None:
    """An empty string would otherwise become the current folder (a path) or nothing."""
    for i, token in enumerate(argv):
        if token.startswith("--") and token.endswith("=") and token[:-1] not in EMPTY_ALLOWED:
            raise click_errors.UsageError(f"{token[:-1]} is empty: give a value")
        if token == "" or token.isspace():
            before = argv[i - 1] if i else ""
            if before.startswith("-") and before not in EMPTY_ALLOWED:
                raise click_errors.UsageError(f"{before} is empty: give a value")
            if not before.startswith("-"):
                raise click_errors.UsageError("an argument is empty (''): give a name or a path")


def _refuse_undecodable_names(argv: list[str]) -> None:
    """A name that is not UTF-8 (``--out $'caf\\xe9.onnx'``) arrives with surrogates: it
    cannot go into a manifest or a message, so it is refused before any work."""
    for i, token in enumerate(argv):
        try:
            token.encode("utf-8")
        except UnicodeEncodeError:
            shown = token.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            before = argv[i - 1] if i and argv[i - 1].startswith("-") and "=" not in argv[i - 1] else ""
            raise click_errors.UsageError(
                f"{before + ' ' if before else ''}'{shown}' is not a UTF-8 name: rename it (or choose another name) in UTF-8"
            ) from None


app = typer.Typer(
    cls=OneLineErrors,
    name="swinedge",
    help="Ship Swin Transformers to NVIDIA GPUs: build, export, quantize, compile, verify, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
class StdoutFailed(SwinedgeError):
    """Standard output could not be written (a full device, a closed pipe)."""


def _stdout_failed(e: OSError) -> StdoutFailed:
    """Once stdout has failed, what is still buffered for it is dropped (fd 1 becomes
    /dev/null), so the interpreter's last flush cannot print a second complaint."""
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return StdoutFailed(f"cannot write to standard output: {os_error_text(e)}")


class _Stdout:
    """``sys.stdout`` as it is now (tests swap it), with a failed write a user error."""

    def write(self, text: str) -> int:
        try:
            return sys.stdout.write(text)
        except OSError as e:
            raise _stdout_failed(e) from None

    def flush(self) -> None:
        try:
            sys.stdout.flush()
        except OSError as e:
            raise _stdout_failed(e) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.stdout, name)


# Piped or logged, rich would wrap tables at 80 columns; 120 keeps each row on a line
# (COLUMNS, when set, still wins).
out = Console(file=_Stdout(), width=None if os.environ.get("COLUMNS") or sys.stdout.isatty() else 120)  # type: ignore[arg-type]
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Print a user mistake as one line on stderr and exit 2; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SwinedgeError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except OSError as e:  # disk full, permissions, a read-only folder: the user's to fix
            err.print(f"[bold red]error:[/] {escape(os_error_message(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            # Outputs are written atomically and scratch folders are removed on the way
            # out: an interrupted command leaves no partial file behind.
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    stdout = _Stdout()
    stdout.write(json.dumps(obj, indent=2) + "\n")
    stdout.flush()


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
    table = Table(title="model variants", box=box.SIMPLE_HEAD)
    table.add_column("family", no_wrap=True)
    table.add_column("name", no_wrap=True)
    for col in ("params", "GFLOPs", "res", "patch", "window"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        window = str(r["window_size"]) if r["window_size"] else "global"
        table.add_row(r["family"], r["name"], f"{r['params']:,}", f"{r['gflops']:.2f}", str(r["img_size"]), str(r["patch_size"]), window)
    out.print(table)


@app.command()
@user_errors
def build(
    model: str = typer.Argument(..., help="Variant name (see `swinedge models`)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (.pt or .safetensors); a manifest .json goes beside it."),
    weights: Optional[Path] = typer.Option(
        None, "--weights", "-w", help="timm or official Microsoft checkpoint (.pth/.pt/.safetensors); with --features also mmdet/mmseg detectors and timm features_only."
    ),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classifier classes (default: the variant's)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Input resolution; a multiple of 32 needs no padding."),
    adapt: bool = typer.Option(False, "--adapt", help="Resize window bias tables and replace the head when they differ from the weights."),
    seed: int = typer.Option(0, "--seed", help="Seed for parameters not taken from --weights."),
    features: bool = typer.Option(False, "--features", help="A detection/segmentation backbone: the stage maps (NCHW), no classifier head."),
    input_size: Optional[str] = typer.Option(None, "--input-size", help="Backbone input HEIGHTxWIDTH (default 800x1333); `export --input-size` exports other sizes."),
    stages: Optional[str] = typer.Option(None, "--stages", help="Backbone stages returned, comma list (default all: 0,1,2,3)."),
    stage_norms: Optional[bool] = typer.Option(
        None, "--stage-norms/--no-stage-norms", help="Backbone: a LayerNorm per returned stage (mmdet/mmseg). Default: as the weights have it."
    ),
) -> None:
    """Build a variant (optionally from pretrained weights) into a self-describing checkpoint."""
    from swinedge.io import require_file

    # Paths first: a missing checkpoint costs no model build.
    if weights is not None:
        require_file(weights, "checkpoint")
    from swinedge.models import build_backbone_checkpoint, build_checkpoint

    if features:
        if num_classes is not None or img_size is not None or adapt:
            raise SwinedgeError("--num-classes, --img-size and --adapt are for classifiers: a backbone takes --input-size and --stages")
        result = build_backbone_checkpoint(
            model, out_path, weights=weights, size=input_size or "800x1333", stages=stages, stage_norms=stage_norms, seed=seed
        )
        dropped = (result["source"] or {}).get("dropped") or {}
        maps = ", ".join(f"{s['name']} {s['channels']}x{s['height']}x{s['width']}" for s in result["stages"])
        out.print(
            f"wrote {result['checkpoint']} ({result['params']:,} params, {result['model']} backbone at {result['input_size']}: {maps}) and {result['manifest']}",
            highlight=False,
            markup=False,
        )
        if dropped:
            out.print("weights not used: " + ", ".join(f"{n} {why}" for why, n in dropped.items()), highlight=False, markup=False)
        resized = (result["source"] or {}).get("resized_tables")
        if resized:
            out.print(f"{resized} window tables resized to the backbone's full window (the classifier's maps were smaller)", highlight=False, markup=False)
        return
    if input_size is not None or stages is not None or stage_norms is not None:
        raise SwinedgeError("--input-size, --stages and --stage-norms are for backbones: add --features")
    result = build_checkpoint(model, out_path, weights=weights, num_classes=num_classes, img_size=img_size, adapt=adapt, seed=seed)
    out.print(
        f"wrote {result['checkpoint']} ({result['params']:,} params, {result['model']}, "
        f"{result['config']['img_size']}px, {result['config']['num_classes']} classes) and {result['manifest']}",
        highlight=False,
        markup=False,
    )


class ProgressReport:
    """Progress of long work on stderr, with an ETA: a live bar on a terminal; when
    stderr is a log file or a pipe, a plain line every ``every`` seconds and at the end
    of each step, so a long run still shows headway."""

    def __init__(self, description: str, total: int | None = None, *, every: float = 10.0):
        import time

        self._clock = time.monotonic
        self._every = every
        self._live = sys.stderr.isatty()
        self._bar: Progress | None = None
        self._task: Any = None
        self.description, self.total, self.done = description, total, 0
        self._started = self._last = self._born = self._clock()

    def _long(self) -> bool:
        """Only work that has run for ``every`` seconds reports in a log: a quick command
        (or one that fails fast) prints nothing but its result."""
        return self._clock() - self._born >= self._every

    def __enter__(self) -> "ProgressReport":
        if self._live:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
        elif exc[0] is None and self.done and self._long():
            self._line()

    def step(self, description: str, total: int | None = None) -> None:
        """A new phase: its own description, count and ETA."""
        if self._bar is None and self.done and self._long():
            self._line()
        self.description, self.total, self.done = description, total, 0
        self._started = self._last = self._clock()
        if self._bar is not None:
            self._bar.reset(self._task, total=total, description=description)

    def start(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
        elif self._clock() - self._last >= self._every:
            self._line()

    def _line(self) -> None:
        now = self._clock()
        self._last = now
        elapsed = now - self._started
        text = f"{self.description}: {self.done}"
        if self.total:
            text += f"/{self.total} ({100 * self.done / self.total:.0f}%)"
        text += f", {_clock_text(elapsed)} elapsed"
        if self.total and 0 < self.done < self.total:
            text += f", about {_clock_text(elapsed * (self.total - self.done) / self.done)} left"
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _clock_text(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A :class:`ProgressReport` of one step; yields ``advance(n)``.

    Bound to the stream that is stderr *now*, so libraries that print while we capture
    their output (calibration) do not swallow the bar."""
    with ProgressReport(description, total) as report:
        yield report.advance


def _floats(text: Optional[str], flag: str) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise SwinedgeError(f"{flag} takes comma-separated numbers, e.g. 0.485,0.456,0.406; got '{text}'") from None
    if not all(math.isfinite(v) for v in values):
        raise SwinedgeError(f"{flag} takes finite numbers, got '{text}'")
    return values


def preprocess_overrides(resize: Optional[int], interpolation: Optional[str], mean: Optional[str], std: Optional[str]) -> dict:
    """CLI preprocessing flags -> ``Preprocess.with_overrides`` keywords (None keeps the manifest's)."""
    return {
        "resize": resize,
        "interpolation": interpolation,
        "mean": _floats(mean, "--mean"),
        "std": _floats(std, "--std"),
    }


def _str_list(text: str, flag: str | None = None) -> tuple[str, ...]:
    """Comma-separated names; with ``flag``, at least one is required."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if flag is not None and not names:
        raise SwinedgeError(f"{flag} needs at least one name, got '{text}'")
    return names


# Preprocessing flags shared by `quantize` and `verify` (use the same values for both).
RESIZE_OPTION = typer.Option(None, "--resize", help="Shorter side before the center crop (default: the model's, floor(img_size / 0.875)).")
INTERPOLATION_OPTION = typer.Option(None, "--interpolation", help="Resize filter: bicubic (default), bilinear or nearest.")
MEAN_OPTION = typer.Option(None, "--mean", help="Normalization mean, comma list (default ImageNet's).")
STD_OPTION = typer.Option(None, "--std", help="Normalization std, comma list (default ImageNet's).")
LABELS_OPTION = typer.Option(
    None,
    "--labels",
    help="The model's class names in class-index order, one per line (or a JSON list): numbers class folders of --data. "
    "Not needed when folders are named by class index, or for ImageNet-1k synset folders and a 1000-class model.",
)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def export(
    model: str = typer.Argument(..., help="Variant name or a checkpoint written by `swinedge build`."),
    out_path: Path = typer.Option(..., "--out", "-o", help="ONNX file to write; a manifest .json goes beside it."),
    batch: str = typer.Option("dynamic", "--batch", help="'dynamic' or a fixed batch size."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (14..21)."),
    attention: str = typer.Option("native", "--attention", help="native: plain ONNX ops; plugin: one fused window-attention node per block."),
    input_size: Optional[str] = typer.Option(
        None, "--input-size", help="Backbones: export at HEIGHTxWIDTH instead of the size built (the sizes are constants of the graph)."
    ),
    sizes: Optional[str] = typer.Option(
        None,
        "--sizes",
        help="Backbones: one graph with dynamic height/width for these sizes, e.g. 640x640,800x1333 (checked at each; "
        "build-engine makes one optimization profile per size). The first is the default size.",
    ),
) -> None:
    """Export FP32 ONNX (constant-folded), checked against torch on ONNX Runtime."""
    from swinedge.export import export_onnx

    with err.status("exporting"):
        r = export_onnx(model, out_path, batch=batch, opset=opset, attention=attention, size=input_size, sizes=sizes)
    at = f" at {', '.join(r.manifest['input_sizes'])}" if r.manifest.get("input_sizes") else ""
    out.print(f"wrote {r.onnx_path} in {r.seconds:.1f}s (max abs err vs torch on onnxruntime{at}: {r.max_abs_err:.2e}) and {r.manifest_path}", highlight=False, markup=False)


@app.command()
@user_errors
def quantize(
    onnx_path: Path = typer.Argument(..., help="FP32 ONNX written by `swinedge export`."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Quantized ONNX to write."),
    precision: str = typer.Option("int8", "--precision", "-p", help="int8 | fp8 (explicit Q/DQ) | fp16 (AutoCast)."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Image folder, manifest file, 'default' (bundled photos) or 'digits'."),
    calib_size: int = typer.Option(64, "--calib-size", help="Calibration images (seeded random subset)."),
    calib_batch: Optional[int] = typer.Option(
        None, "--calib-batch", help="Images per calibration step (default 8 for int8/fp8, 2 for fp16): peak memory grows with it, not with --calib-size."
    ),
    method: str = typer.Option("entropy", "--method", help="Calibration: entropy | max."),
    keep_high_precision: Optional[str] = typer.Option(
        None,
        "--keep-high-precision",
        help=f"Op types kept in high precision, comma list ('' for none). Default: {','.join(DEFAULT_KEEP_HIGH_PRECISION)} "
        f"for int8/fp8, {','.join(DEFAULT_KEEP_FP32_FOR_FP16)} for fp16.",
    ),
    quantize_patch_embed: bool = typer.Option(False, "--quantize-patch-embed", help="Also quantize the patch-embedding conv."),
    quantize_head: bool = typer.Option(False, "--quantize-head", help="Also quantize the classifier head."),
    quantize_attention_matmuls: bool = typer.Option(False, "--quantize-attention-matmuls", help="Also quantize q.k^T and P.V."),
    quantize_residual: bool = typer.Option(
        False, "--quantize-residual", help="Also quantize the residual Adds (faster, riskier): always guarded."
    ),
    aggressive: bool = typer.Option(
        False, "--aggressive", help="Quantize residual Adds, softmax inputs and attention matmuls too: always guarded."
    ),
    data: Optional[str] = typer.Option(
        None, "--data", help="Guard: images to measure against the FP32 graph (default: the --calib source, other picks)."
    ),
    data_size: int = typer.Option(64, "--data-size", help="Guard: images to measure on."),
    max_top1_drop: Optional[float] = typer.Option(None, "--max-top1-drop", help="Guard: budget of top-1 points lost (labelled --data)."),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement", help="Guard: budget as % top-1 agreement with FP32 (no labels needed)."),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="Guard: budget as mean logit cosine with FP32."),
    high_precision_dtype: str = typer.Option("fp16", "--high-precision-dtype", help="fp16 for TensorRT graphs, fp32 for CPU verification graphs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration subset."),
    resize: Optional[int] = RESIZE_OPTION,
    interpolation: Optional[str] = INTERPOLATION_OPTION,
    mean: Optional[str] = MEAN_OPTION,
    std: Optional[str] = STD_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Quantize an FP32 graph to INT8/FP8 (calibrated Q/DQ) or FP16 (AutoCast)."""
    from swinedge.quantize import QuantizeOptions, calibration_set_for, check_output, quantize_onnx

    opts = QuantizeOptions(
        precision=precision,
        calib=calib,
        calib_size=calib_size,
        calib_batch=calib_batch,
        method=method,
        seed=seed,
        keep_high_precision=None if keep_high_precision is None else _str_list(keep_high_precision),
        quantize_patch_embed=quantize_patch_embed,
        quantize_head=quantize_head,
        quantize_attention_matmuls=quantize_attention_matmuls or aggressive,
        quantize_residual=quantize_residual or aggressive,
        quantize_softmax=aggressive,
        high_precision_dtype=high_precision_dtype,
    )
    opts.validate()
    budget = None
    if quantize_residual or aggressive or data is not None or any(v is not None for v in (max_top1_drop, min_agreement, min_cosine)):
        from swinedge.features import is_backbone_artifact
        from swinedge.guard import Budget

        if is_backbone_artifact(onnx_path):
            raise SwinedgeError(
                "the guard (--quantize-residual, --aggressive, --data and the budgets) measures logits: a backbone is "
                "quantized with the default placement and checked stage by stage with `swinedge verify`"
            )
        budget = Budget(max_top1_drop=max_top1_drop, min_agreement=min_agreement, min_cosine=min_cosine, data=data, size=data_size)
        budget.validate()
        budget.check_source(data if data is not None else calib)
    from swinedge.export import load_onnx

    check_output(onnx_path, out_path, opts)
    load_onnx(onnx_path)
    with err.status("listing calibration images"):
        images = calibration_set_for(onnx_path, calib, calib_size, seed, warn, preprocess_overrides(resize, interpolation, mean, std))
    figures = None
    if budget is None:
        with progress_bar(f"calibrating {precision} ({method})", len(images)) as advance:
            r = quantize_onnx(onnx_path, out_path, opts, images=images, on_batch=advance, warn=warn)
    else:
        from swinedge.guard import guarded_quantize

        with ProgressReport(f"calibrating {precision} ({method})", len(images)) as progress:
            r, figures = guarded_quantize(
                onnx_path, out_path, opts, budget, images=images, on_step=progress.step, on_batch=progress.advance, warn=warn
            )
    if as_json:
        print_json(
            {"onnx": str(r.onnx_path), "manifest": str(r.manifest_path), "seconds": r.seconds, "calibration": r.calibration, "peak_memory_mb": r.peak_memory_mb, "guard": figures}
        )
    else:
        if figures is not None:
            print_guard(figures)
        peak = f", peak memory {r.peak_memory_mb / 1024:.1f} GiB" if r.peak_memory_mb else ""
        out.print(
            f"wrote {r.onnx_path} ({precision}, {r.calibration['count']} calibration images in batches of {r.calibration['batch']}, "
            f"{r.seconds:.1f}s{peak}) and {r.manifest_path}",
            highlight=False,
            markup=False,
        )


@app.command("qat")
@user_errors
def qat_cmd(
    checkpoint: str = typer.Argument(..., help="Checkpoint (.pt from `swinedge build`, timm or official weights) or variant name."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Q/DQ ONNX to write (build-engine takes it as it takes a PTQ graph)."),
    data: str = typer.Option(..., "--data", help="Labelled training images: class folders, a manifest, or 'digits-train'."),
    epochs: int = typer.Option(1, "--epochs", help="Passes over --data."),
    batch: int = typer.Option(32, "--batch", help="Images per training step."),
    lr: float = typer.Option(1e-5, "--lr", help="AdamW learning rate (fine-tuning: small)."),
    calib_size: int = typer.Option(128, "--calib-size", help="Images that set the INT8 ranges before training."),
    size: Optional[int] = typer.Option(None, "--size", help="Training images per epoch (default: all)."),
    distill: bool = typer.Option(False, "--distill", help="Also pull the logits towards the float model's (KL, temperature 2)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the image order and calibration picks."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Quantization-aware training: fine-tune under INT8 fake quantization (the PTQ
    recipe's placement) and export a Q/DQ ONNX graph."""
    from swinedge.qat import QatOptions, qat

    opts = QatOptions(data=data, epochs=epochs, batch=batch, lr=lr, calib_size=calib_size, distill=distill, seed=seed, size=size)
    opts.validate()
    if out_path.suffix != ".onnx":
        raise SwinedgeError(f"--out {out_path}: use a file name ending in .onnx")
    from swinedge.io import check_output_file

    check_output_file(out_path)
    with ProgressReport("QAT") as progress:
        r = qat(checkpoint, out_path, opts, on_step=progress.step, on_batch=progress.advance, warn=warn)
    if as_json:
        print_json({"onnx": str(r.onnx_path), "manifest": str(r.manifest_path), "seconds": r.seconds, "loss_per_epoch": r.losses})
    else:
        losses = ", ".join(f"{v:.4f}" for v in r.losses)
        out.print(f"wrote {r.onnx_path} (INT8 QAT, {len(r.losses)} epochs, loss per epoch {losses}, {r.seconds:.1f}s) and {r.manifest_path}", highlight=False, markup=False)


def print_guard(record: dict[str, Any]) -> None:
    budget = ", ".join(f"{k} {v}" for k, v in record["budget"].items())
    table = Table(title=f"guard: budget {budget}", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("blocks in high precision", "top-1 drop", "agreement", "cosine", "within"):
        table.add_column(col, justify="left" if col.startswith("blocks") else "right")
    for step in record["path"]:
        drop = "-" if step["top1_drop"] is None else f"{step['top1_drop']:+.2f}"
        blocks = ", ".join(step["high_precision_blocks"]) or "none"
        table.add_row(blocks, drop, f"{step['top1_agreement']:.2f}%", f"{step['cosine_mean']:.5f}", "yes" if step["within_budget"] else "no")
    out.print(table)
    kept = ", ".join(record["high_precision_blocks"]) or "no block"
    out.print(f"kept in high precision: {kept}", highlight=False, markup=False)


@app.command()
@user_errors
def verify(
    reference: str = typer.Argument(..., help="Float reference: variant name, checkpoint, or FP32 ONNX."),
    candidate: str = typer.Argument(..., help="Candidate: ONNX (quantized or plugin graph), checkpoint or engine."),
    data: Optional[str] = typer.Option(None, "--data", help="Image folder, manifest, 'default' (bundled photos) or 'digits' (labelled)."),
    size: Optional[int] = typer.Option(None, "--size", help="Images to use (default: all; 64 for the bundled photos)."),
    max_top1_drop: float = typer.Option(MAX_TOP1_DROP, "--max-top1-drop", help="Fail when labelled top-1 drops by more points."),
    min_cosine: float = typer.Option(MIN_COSINE, "--min-cosine", help="Fail when the mean logit cosine (backbones: any stage's mean cosine) is lower."),
    max_rel_err: Optional[float] = typer.Option(None, "--max-rel-err", help="Backbones: fail when a stage's mean relative error is higher (default 0.15)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Inference batch size (images are read a batch at a time); default 16, backbones 4."),
    labels: Optional[Path] = LABELS_OPTION,
    resize: Optional[int] = RESIZE_OPTION,
    interpolation: Optional[str] = INTERPOLATION_OPTION,
    mean: Optional[str] = MEAN_OPTION,
    std: Optional[str] = STD_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Compare a candidate with the float reference on the same images; exit 1 when a threshold fails.

    Backbones (`build --features`) are compared stage by stage: cosine and relative error
    of every stage map, no labels needed."""
    from swinedge.features import MAX_STAGE_REL_ERR, is_backbone_artifact, verify_features
    from swinedge.verify import verify as run_verify

    if is_backbone_artifact(candidate):
        if labels is not None or resize is not None:
            raise SwinedgeError("--labels and --resize are for classifiers: a backbone is compared stage by stage, resized to fit its input")
        with ProgressReport("verifying backbone (images)") as progress:
            freport = verify_features(
                reference,
                candidate,
                data=data,
                size=size,
                min_cosine=min_cosine,
                max_rel_err=MAX_STAGE_REL_ERR if max_rel_err is None else max_rel_err,
                batch=4 if batch is None else batch,
                preprocess_overrides=preprocess_overrides(None, interpolation, mean, std),
                on_start=progress.start,
                on_batch=progress.advance,
                warn=warn,
            )
        finish_report(freport, print_feature_table, as_json)
        return
    if max_rel_err is not None:
        raise SwinedgeError("--max-rel-err is for backbones (stage maps); a classifier is judged by --min-cosine and --max-top1-drop")
    with ProgressReport("verifying (images)") as progress:
        report = run_verify(
            reference,
            candidate,
            data=data,
            size=size,
            max_top1_drop=max_top1_drop,
            min_cosine=min_cosine,
            batch=16 if batch is None else batch,
            labels_file=labels,
            preprocess_overrides=preprocess_overrides(resize, interpolation, mean, std),
            on_start=progress.start,
            on_batch=progress.advance,
            warn=warn,
        )
    finish_report(report, print_verify_table, as_json)


def finish_report(report: Any, print_table: Callable[[Any], None], as_json: bool) -> None:
    """A verification report as JSON or a table; exit 1 with its failures when it failed."""
    if as_json:
        print_json(report.to_dict())
    else:
        print_table(report)
    if not report.passed:
        err.print(f"[bold red]FAILED:[/] {escape('; '.join(report.failures))}", highlight=False)
        raise typer.Exit(1)


def print_feature_table(report: Any) -> None:
    table = Table(title=f"{report.candidate} vs {report.reference}", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("stage", "shape", "cosine mean", "cosine min", "rel err mean", "rel err max", "max abs"):
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    for s in report.stages:
        table.add_row(
            s["stage"],
            "x".join(str(d) for d in s["shape"]),
            f"{s['cosine_mean']:.6f}",
            f"{s['cosine_min']:.6f}",
            f"{s['rel_err_mean']:.4f}",
            f"{s['rel_err_max']:.4f}",
            f"{s['max_abs_err']:.4g}",
        )
    out.print(table)
    images = report.stages[0]["images"] if report.stages else 0
    out.print(f"{images} images ({report.data['source']}); result: " + ("[green]PASS[/]" if report.passed else "[red]FAIL[/]"), highlight=False)


def print_verify_table(report: Any) -> None:
    c = report.comparison
    table = Table(title=f"{report.candidate} vs {report.reference}", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("images", f"{c.images} ({report.data['source']})")
    if c.top1_reference is not None:
        table.add_row("top-1 reference", f"{c.top1_reference:.2f}%")
        table.add_row("top-1 candidate", f"{c.top1_candidate:.2f}%")
        table.add_row("top-1 drop", f"{c.top1_drop:+.2f} pts")
    table.add_row("top-1 agreement", f"{c.top1_agreement:.2f}%")
    table.add_row("logit cosine mean / min", f"{c.cosine_mean:.6f} / {c.cosine_min:.6f}")
    table.add_row("max abs error", f"{c.max_abs_err:.4g}")
    table.add_row("result", "[green]PASS[/]" if report.passed else "[red]FAIL[/]")
    out.print(table)


@app.command("inspect")
@user_errors
def inspect_cmd(
    reference: Path = typer.Argument(..., help="The FP32 ONNX graph written by `swinedge export`."),
    candidate: Path = typer.Argument(..., help="A graph made from it: quantize (INT8/FP8/FP16) or a plugin graph."),
    data: Optional[str] = typer.Option(None, "--data", help="Image folder, manifest, 'default' (bundled photos) or 'digits'."),
    size: int = typer.Option(16, "--size", help="Images to compare on."),
    batch: int = typer.Option(4, "--batch", help="Images per step (every layer's output of a batch is held at once)."),
    top: int = typer.Option(20, "--top", help="Rows of the table, worst first (0: all)."),
    chart: Optional[Path] = typer.Option(None, "--chart", help="Write a PNG of relative error against depth here."),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="Run CANDIDATE on onnxruntime (CPU) or tensorrt (an engine built with the layers marked as outputs)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole map as JSON."),
) -> None:
    """Per-layer error map: every block's output (and its attention, MLP and merge outputs)
    of CANDIDATE against the FP32 REFERENCE, by cosine and relative error, worst first."""
    from swinedge.error_map import error_map, write_chart
    from swinedge.io import check_output_file, refuse_output_over_input

    if not 0 <= top <= 100_000:
        raise SwinedgeError(f"--top must be 0..100000, got {top}")
    if chart is not None:
        if chart.suffix.lower() != ".png":
            raise SwinedgeError(f"--chart {chart}: use a file name ending in .png")
        check_output_file(chart, "--chart")
        refuse_output_over_input(chart, reference, candidate)
    with ProgressReport("error map (images)") as progress:
        emap = error_map(
            reference, candidate, data=data, size=size, batch=batch, runtime=runtime, on_start=progress.start, on_batch=progress.advance, warn=warn
        )
    if chart is not None:
        write_chart(emap, chart)
    if as_json:
        print_json({**emap.to_dict(), "chart": str(chart) if chart else None})
        return
    rows = emap.worst()
    table = Table(title=f"{candidate} vs {reference}: worst first ({emap.data.get('count')} images)", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("layer", no_wrap=True)
    for col in ("kind", "depth", "rel err", "cosine", "added"):
        table.add_column(col, justify="left" if col == "kind" else "right", no_wrap=True)
    for p in rows[: top or None]:
        added = "" if p.added is None else f"{p.added:+.1e}"
        table.add_row(p.point.name, p.point.kind, str(p.point.depth), f"{p.rel_err:.2e}", f"{p.cosine_mean:.5f}", added)
    out.print(table)
    if emap.absent:
        out.print(f"absent from the candidate: {', '.join(emap.absent)}", highlight=False, markup=False)
    ranking = emap.block_ranking()
    if ranking:
        out.print(f"blocks by the error they add: {', '.join(ranking[:8])}{' ...' if len(ranking) > 8 else ''}", highlight=False, markup=False)
    if chart is not None:
        out.print(f"wrote {chart}", highlight=False, markup=False)


def _int_list(text: str, flag: str, limit: int = 4096) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise SwinedgeError(f"{flag} takes comma-separated integers 1..{limit}, e.g. 1,8,32; got '{text}'") from None
    if not values or min(values) < 1 or max(values) > limit:
        raise SwinedgeError(f"{flag} takes comma-separated integers 1..{limit}, e.g. 1,8,32; got '{text}'")
    return values


@app.command("build-engine")
@user_errors
def build_engine_cmd(
    onnx_path: Path = typer.Argument(..., help="ONNX from `swinedge export` or `swinedge quantize`."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Plan to write, e.g. engines/swin_t.int8.plan (manifest .json beside it)."),
    min_batch: Optional[int] = typer.Option(None, "--min-batch", help="Profile minimum batch (default 1)."),
    opt_batch: Optional[int] = typer.Option(None, "--opt-batch", help="Batch TensorRT tunes for (default 32)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Profile maximum batch (default 64)."),
    workspace: float = typer.Option(4.0, "--workspace", help="Builder workspace limit, GiB."),
    opt_level: int = typer.Option(3, "--opt-level", help="Builder optimization level 0..5."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file: reused when present, written after the build."),
    plugin: str = typer.Option(
        "auto",
        "--plugin",
        help="auto: the fused plugin where TensorRT (>= 10.9), GPU, Triton and graph allow it, else native attention and why; "
        "on: require it (refused before building); off: native attention.",
    ),
    sizes: Optional[str] = typer.Option(
        None,
        "--sizes",
        help="Graphs exported with --sizes: one optimization profile per HEIGHTxWIDTH (default: the sizes it was exported for). "
        "Any size with the graph's windows works, without a new export.",
    ),
    verbose: bool = typer.Option(False, "--verbose", help="TensorRT's verbose log."),
) -> None:
    """Compile a strongly typed TensorRT engine, with the fused window-attention plugin where available."""
    from swinedge.engine import BuildOptions, build_engine
    from swinedge.export import parse_sizes

    profile_sizes = tuple(parse_sizes(sizes)) if sizes is not None else None
    opts = BuildOptions(min_batch, opt_batch, max_batch, workspace, opt_level, timing_cache, plugin, profile_sizes)
    with err.status("building engine") as st:
        r = build_engine(onnx_path, out_path, opts, verbose=verbose, status=lambda m: st.update(escape(m)))
    for warning in r.warnings:
        err.print(f"warning: {warning}", highlight=False, markup=False)
    out.print(f"wrote {r.plan} in {r.seconds:.0f}s ({r.note}) and {r.manifest_path}", highlight=False, markup=False)


@app.command()
@user_errors
def benchmark(
    artifacts: list[str] = typer.Argument(..., help="Checkpoints / variant names (torch), .onnx (onnxruntime), .plan (TensorRT)."),
    batch: str = typer.Option("1,8,32", "--batch", help="Batch sizes, comma-separated."),
    iters: int = typer.Option(20, "--iters", help="Timed iterations per batch."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed warm-up iterations per batch."),
    data: Optional[str] = typer.Option(None, "--data", help="Images for the accuracy check: folder, manifest, 'default' or 'digits'."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Float torch reference (default: the first checkpoint among ARTIFACTS)."),
    labels: Optional[Path] = LABELS_OPTION,
    torch_precision: str = typer.Option("fp32", "--torch-precision", help="Torch runs: fp32 and/or fp16 (autocast, GPU), comma list."),
    torch_attention: str = typer.Option("reference", "--torch-attention", help="Torch runs: reference and/or fused (GPU), comma list."),
    out_dir: Path = typer.Option(Path("swinedge-out/benchmark"), "--out", help="Folder for benchmark.json, benchmark.md, latency.png."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Latency (median, p90, p99, throughput), peak GPU memory and accuracy of each artifact against the float torch model."""
    from swinedge.bench import benchmark_artifacts, write_report
    from swinedge.io import check_output_folder

    batches = _int_list(batch, "--batch")
    check_output_folder(out_dir, *artifacts, data, reference)
    with ProgressReport("benchmarking") as progress:
        report = benchmark_artifacts(
            artifacts,
            batches=batches,
            iters=iters,
            warmup=warmup,
            data=data,
            reference=reference,
            labels_file=labels,
            torch_precisions=_str_list(torch_precision, "--torch-precision"),
            torch_attentions=_str_list(torch_attention, "--torch-attention"),
            on_step=progress.step,
            on_iter=progress.advance,
            on_batch=progress.advance,
            warn=warn,
        )
    files = write_report(report, out_dir)
    if as_json:
        print_json({**report, "files": files})
        return
    print_benchmark_table(report)
    for note in report["skipped"]:
        warn(f"skipped: {note}")
    out.print(f"wrote {', '.join(files.values())}", highlight=False, markup=False)


def print_benchmark_table(report: dict) -> None:
    where = report.get("gpu") or "CPU"
    title = f"latency in ms ({where}); accuracy vs {Path(report['reference']).name}"
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("runner", no_wrap=True)
    for col in ("batch", "median", "p90", "p99", "img/s", "agree", "cosine"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in report["results"]:
        acc = r["accuracy"] or {}
        for i, s in enumerate(r["latency"]):
            table.add_row(
                r["runner"] if i == 0 else "",
                str(s["batch"]), f"{s['median_ms']:.2f}", f"{s['p90_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{s['throughput_ips']:.1f}",
                f"{acc['top1_agreement']:.1f}%" if i == 0 and acc else "", f"{acc['cosine_mean']:.5f}" if i == 0 and acc else "",
            )  # fmt: skip
    out.print(table)


@app.command()
@user_errors
def doctor(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """What this machine has (Python, torch, CUDA, GPU, TensorRT, modelopt, Triton, onnxruntime) and what to do about gaps."""
    from swinedge.doctor import run_checks

    checks = run_checks()
    if as_json:
        print_json([c.to_dict() for c in checks])
        return
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    table.add_column("to do", overflow="fold")
    colors = {"ok": "green", "warn": "yellow", "missing": "red"}
    for c in checks:
        table.add_row(c.name, f"[{colors[c.status]}]{c.status}[/]", c.detail, c.fix)
    out.print(table)


@app.command("serve-repo")
@user_errors
def serve_repo(
    artifacts: list[Path] = typer.Argument(..., help="TensorRT plans (.plan/.engine, with manifests) and ONNX graphs to serve."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Model repository folder to write (an earlier one is replaced whole)."),
    name: Optional[list[str]] = typer.Option(None, "--name", help="Model name, once per artifact in order (default: the file name)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Class names, one per line (or a JSON list), for the ensemble's top-k labels; "
                                          "default: ImageNet-1k synset ids for 1000-class models, else the class index."),
    top_k: int = typer.Option(5, "--top-k", help="Classes the image ensemble returns per image."),
    ensemble: bool = typer.Option(True, "--ensemble/--no-ensemble", help="Write NAME_image (image bytes in, labels out) for classifiers."),
    onnx_backend: str = typer.Option("onnxruntime", "--onnx-backend", help="onnxruntime: Triton's onnxruntime backend; python: ONNX Runtime "
                                     "inside the Python backend, CPU (servers without the onnxruntime backend)."),
    onnx_device: str = typer.Option("gpu", "--onnx-device", help="Where ONNX models run: gpu or cpu instances (plans always run on the GPU)."),
    instances: int = typer.Option(1, "--instances", help="Instances of each model (instance_group count)."),
    max_batch: int = typer.Option(8, "--max-batch", help="max_batch_size for ONNX graphs with a dynamic batch (plans: their profile's max)."),
    queue_delay_us: int = typer.Option(100, "--queue-delay-us", help="Dynamic batching: longest wait to fill a preferred batch, microseconds."),
    max_image_mb: float = typer.Option(16.0, "--max-image-mb", help="Largest encoded image the ensemble accepts, MiB (larger: HTTP 400)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Write a Triton Inference Server model repository: plans, ONNX graphs and image ensembles, every config checked with Triton's schema."""
    from swinedge.data import read_class_names
    from swinedge.serving.repository import RepositoryOptions, write_model_repository

    options = RepositoryOptions(
        names=tuple(name or ()), labels=tuple(read_class_names(labels)) if labels is not None else None, top_k=top_k, ensemble=ensemble,
        onnx_backend=onnx_backend, onnx_device=onnx_device, instances=instances, max_batch=max_batch, queue_delay_us=queue_delay_us,
        max_image_mb=max_image_mb,
    )  # fmt: skip
    with ProgressReport("writing the model repository") as progress:
        result = write_model_repository(list(artifacts), out_dir, options, status=progress.step)
    if as_json:
        print_json(result)
        return
    table = Table(title=f"Triton model repository {result['repository']}", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("model", "kind", "task", "max batch", "image ensemble"):
        table.add_column(col)
    for m in result["models"]:
        table.add_row(m["name"], m["kind"], m["task"], str(m["max_batch_size"]), m.get("ensemble", {}).get("name", "-"))
    out.print(table)
    out.print(f"start it with: tritonserver --model-repository={Path(result['repository']).resolve()}", highlight=False, markup=False)


@app.command("run")
@user_errors
def run_cmd(
    model: Optional[str] = typer.Argument(None, help="Variant name; default: the embedded digits model (trained once on CPU, cached)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="timm or official checkpoint for MODEL."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images: folder, manifest or 'default'."),
    calib_size: Optional[int] = typer.Option(None, "--calib-size", help="Calibration images for INT8 (default 128 digits, 64 otherwise)."),
    data: Optional[str] = typer.Option(None, "--data", help="Evaluation images (labelled folders give top-1); default: the calibration set."),
    out_dir: Path = typer.Option(Path("swinedge-out/run"), "--out", help="Folder for every artifact and the report."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Benchmark batches (default 1,8 on CPU; 1,8,32 on GPU)."),
    iters: int = typer.Option(10, "--iters", help="Timed iterations per batch."),
    labels: Optional[Path] = LABELS_OPTION,
) -> None:
    """The whole flow: build, export, quantize INT8 + FP16, verify, engines (with TensorRT), benchmark, report."""
    from swinedge.pipeline import run_pipeline

    batches = _int_list(batch, "--batch") if batch else None
    with err.status("starting") as st:
        summary = run_pipeline(
            out_dir, model=model, weights=weights, calib=calib, calib_size=calib_size, data=data, batches=batches, iters=iters,
            labels_file=labels, status=lambda m: st.update(escape(m)), warn=warn,
        )
    table = Table(title=f"accuracy: {summary['model']} on {summary['eval_data']}", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("precision", "top-1", "drop", "top-1 agree", "cosine", "verify"):
        table.add_column(col, justify="left" if col == "precision" else "right")
    ref = summary["accuracy"][0].get("top1_reference")
    if ref is not None:
        table.add_row("fp32 torch", f"{ref:.2f}%", "", "", "", "")
    for a in summary["accuracy"]:
        table.add_row(
            a["precision"], f"{a['top1']:.2f}%" if a["top1"] is not None else "-", f"{a['top1_drop']:+.2f}" if a["top1_drop"] is not None else "-",
            f"{a['top1_agreement']:.2f}%", f"{a['cosine_mean']:.6f}", "pass" if a["passed"] else "[red]FAIL[/]",
        )  # fmt: skip
    out.print(table)
    print_benchmark_table(summary["benchmark"])
    for note in summary["benchmark"]["skipped"]:
        warn(f"skipped: {note}")
    out.print(f"report: {summary['files']['report']} (+ report.json, latency.png)", highlight=False, markup=False)


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM and SIGHUP (a dropped ssh session) unwind like Ctrl-C, so temp folders and
    partial files are cleaned up."""
    raise KeyboardInterrupt


# Options naming a file or folder the command writes: leftovers of killed runs are
# collected in the folder the output goes to (beside it) before the command starts.
OUTPUT_OPTIONS = ("--out", "-o", "--chart", "--timing-cache")
DEFAULT_OUTPUTS = {"run": "swinedge-out/run", "benchmark": "swinedge-out/benchmark"}


def _output_folders(argv: list[str]) -> list[Path]:
    folders: list[Path] = []
    given = False
    for i, token in enumerate(argv):
        value = None
        if token in OUTPUT_OPTIONS and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith("--") and "=" in token and token.split("=", 1)[0] in OUTPUT_OPTIONS:
            value = token.split("=", 1)[1]
        if value:
            given |= token.split("=", 1)[0] in ("--out", "-o")
            folders.append(Path(value).parent)
    command = next((t for t in argv if not t.startswith("-")), None)
    if not given and command in DEFAULT_OUTPUTS:
        folders.append(Path(DEFAULT_OUTPUTS[command]).parent)
    return folders


def collect_leftovers(argv: list[str]) -> None:
    """Before a command: remove the temp folders (under TMPDIR) and the partial outputs
    (in the folders it writes to) that swinedge processes killed with no chance to clean
    up (SIGKILL, the OOM killer, a power cut) left, saying so in one line each.
    `swinedge doctor` only lists them."""
    import tempfile

    from swinedge import io

    io.leftover_report = lambda message: err.print(f"note: {message}", highlight=False, markup=False, soft_wrap=True)
    if "doctor" in argv:
        return
    with contextlib.suppress(Exception):  # collecting is a courtesy: it never stops a command
        io.remove_stale_leftovers(tempfile.gettempdir(), temp=True)
    for folder in _output_folders(argv):
        with contextlib.suppress(Exception):
            if folder.is_dir():
                io.remove_stale_leftovers(folder)


def run() -> None:  # console-script entry point
    import gc

    from swinedge.io import home_folder, private_workspace

    signal.signal(signal.SIGTERM, _terminated)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _terminated)
    # The whole command gets a private temp dir: what libraries leave there (ONNX Runtime
    # writes a session marker when its sessions are destroyed) goes when the command ends.
    code: Any = 0
    try:
        collect_leftovers(sys.argv[1:])
        with private_workspace("swinedge-run-") as scratch:
            if home_folder() is None and not os.environ.get("MPLCONFIGDIR"):
                # No home folder (a container's --user): matplotlib's cache goes with the command.
                os.environ["MPLCONFIGDIR"] = str(scratch / "matplotlib")
            try:
                app()
            except SystemExit as e:
                code = e.code
            finally:
                gc.collect()  # destroy library sessions while the private temp dir is current
        sys.stdout.flush()
    except KeyboardInterrupt:  # outside a command (while parsing options): same answer
        err.print("interrupted")
        sys.exit(130)
    except SwinedgeError as e:  # the private temp dir could not be made
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:  # the last flush of stdout: a full device, a closed pipe
        failure = _stdout_failed(e)
        err.print(f"[bold red]error:[/] {escape(str(failure))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    run()
