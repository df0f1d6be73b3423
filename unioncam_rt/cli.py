"""``unioncam-rt`` command line: parse options, build a config, call one library function."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import UnionCamError
from .zoo.spec import DEFAULT_MODEL, MODELS

app = typer.Typer(add_completion=False, no_args_is_help=True, help=(
    "UnionCAM explanations of CNN classifiers, fast enough for production."))

ModelOpt = Annotated[str, typer.Option("--model", "-m", help=f"Zoo model: {', '.join(MODELS)}.")]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", help="Weights: a state_dict .pth (loaded with weights_only=True), or 'random[:SEED]' "
    "for tests. Default: the model's real ImageNet weights (efficientnet-lite0: offline; "
    "torchvision models: torchvision's weights API).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Masked images per engine call.")]


@contextmanager
def user_errors():
    """Turn a `UnionCamError` into one line on stderr and exit code 2 (no traceback)."""
    try:
        yield
    except UnionCamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@dataclass
class ExplainConfig:
    inputs: list[Path]
    out: Path
    model: str | None
    weights: str | None
    target: str | None
    method: str
    theta: float
    batch_size: int
    save_npy: bool
    backend: str
    engine_dir: Path | None
    providers: list[str] | None
    precision: str
    device: str


def run_explain(config: ExplainConfig) -> int:
    """Explain every input image into ``config.out``; returns the exit code."""
    from tqdm.auto import tqdm

    from .explainer import Explainer
    from .images import list_images
    from .outputs import unique_stems, write_explanation

    paths = list_images(config.inputs)
    explainer = Explainer(config.model, method=config.method, theta=config.theta,
                          batch_size=config.batch_size, weights=config.weights, backend=config.backend,
                          engine_dir=config.engine_dir, providers=config.providers,
                          precision=config.precision, device=config.device, progress=True)
    explainer.class_index(config.target)  # refuse a bad --class before any work
    stems = dict(zip(paths, unique_stems(paths)))
    failures: list[str] = []
    with tqdm(total=len(paths), desc="images", unit="img", disable=None) as bar:
        for path, outcome in explainer.iter_files(paths, config.target):
            if isinstance(outcome, UnionCamError):
                failures.append(str(outcome))
                tqdm.write(f"error: {outcome}", file=sys.stderr)
            else:
                write_explanation(outcome, config.out, stems[path], config.save_npy)
                note = f" [{outcome.union.branch}]" if outcome.union else ""
                flag = " (constant map: written as zeros)" if outcome.constant_map else ""
                tqdm.write(f"{path.name}: {outcome.class_name} ({outcome.probability:.3f}){note}"
                           f" -> {config.out / stems[path]}.*{flag}")
            bar.update(1)
    if failures:
        typer.echo(f"{len(failures)} of {len(paths)} images failed:", err=True)
        for line in failures:
            typer.echo(f"  {line}", err=True)
        return 1
    return 0


@app.command()
def explain(
    images: Annotated[list[Path], typer.Argument(help="Image files and/or directories (not recursive).")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help=f"Zoo model: {', '.join(MODELS)}. Default: {DEFAULT_MODEL}, or the --engine directory's model.")] = None,
    target: Annotated[Optional[str], typer.Option("--class", "-c", help="Class index or name to explain. Default: top-1.")] = None,
    method: Annotated[str, typer.Option(help="unioncam, gradcam, gradcampp, scorecam, groupcam or layercam.")] = "unioncam",
    theta: Annotated[float, typer.Option(help="UnionCAM denoising percentile, 0-100.")] = 10.0,
    batch_size: BatchOpt = 32,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("unioncam-out"),
    save_npy: Annotated[bool, typer.Option("--save-npy", help="Also write <stem>.cam.npy (float32, input resolution, [0, 1]).")] = False,
    weights: WeightsOpt = None,
    engine: Annotated[Optional[Path], typer.Option("--engine", help="Exported engine directory (unioncam-rt export). Default: export the model once into the cache and reuse it.")] = None,
    backend: Annotated[str, typer.Option(help="onnxruntime (torch-free), tensorrt, or torch (the reference).")] = "onnxruntime",
    providers: Annotated[Optional[str], typer.Option(help="ONNX Runtime providers, comma-separated, e.g. CPUExecutionProvider. Default: TensorRT, CUDA, CPU as installed.")] = None,
    precision: Annotated[str, typer.Option(help="fp32 (exact); fp16 (tensorrt, torch on CUDA); int8 (onnxruntime, after unioncam-rt quantize).")] = "fp32",
    device: Annotated[str, typer.Option(help="torch device of the torch backend, e.g. cpu or cuda.")] = "cpu",
):
    """Explain images: writes <stem>.overlay.png, <stem>.cam.png and <stem>.json per image."""
    provider_list = [p.strip() for p in providers.split(",") if p.strip()] if providers else None
    config = ExplainConfig(list(images), out, model, weights, target, method, theta, batch_size, save_npy,
                           backend, engine, provider_list, precision, device)
    with user_errors():
        code = run_explain(config)
    raise typer.Exit(code)


@app.command()
def export(
    model: ModelOpt = "vgg16",
    out: Annotated[Path, typer.Option("--out", "-o", help="Engine directory to write (replaced if it holds an earlier export).")] = Path("engines/vgg16"),
    weights: WeightsOpt = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch of the TensorRT profiles.")] = 64,
    tensorrt: Annotated[bool, typer.Option("--tensorrt", help="Also build TensorRT engines (needs tensorrt and a GPU).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="With --tensorrt: build FP16 engines too.")] = False,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Compare ONNX Runtime with torch autograd on a sample.")] = True,
):
    """Export a model: features.onnx (logits, activations, gradients), scores.onnx, manifest.json."""
    from .export.pipeline import ExportConfig, export_model

    config = ExportConfig(model, out, weights, opset, max_batch, tensorrt, fp16, check)
    with user_errors():
        report = export_model(config, progress=True)
    typer.echo(report.summary())


@app.command()
def quantize(
    engine: Annotated[Path, typer.Option("--engine", help="Exported engine directory to add scores.int8.onnx to.")],
    calibration: Annotated[list[Path], typer.Argument(help="Calibration photos (files or directories).")],
    limit: Annotated[int, typer.Option(min=1, help="Use at most this many calibration images.")] = 32,
):
    """Static INT8 (QDQ) scoring graph for the CPU fast mode (explain --precision int8)."""
    from .export.quantize import quantize_scores

    with user_errors():
        report = quantize_scores(engine, list(calibration), limit)
    typer.echo(report.summary())


@app.command()
def evaluate(
    images: Annotated[Optional[list[Path]], typer.Argument(help="Image files or folders (or use --labels).")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="CSV with file and class_index columns, e.g. ../shared/data/imagenet-sample-dev/labels.csv.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help=f"Zoo model. Default: {DEFAULT_MODEL}, or the --engine directory's model.")] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated: unioncam, gradcam, gradcampp, scorecam, groupcam, layercam.")] = "unioncam,gradcam,gradcampp,scorecam,groupcam,layercam",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Evaluate at most this many images.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; an interrupted run there is resumed.")] = Path("unioncam-eval"),
    save_maps: Annotated[bool, typer.Option("--save-maps", help="Keep every map as maps/<method>/<stem>.npy.")] = False,
    gallery: Annotated[int, typer.Option(min=0, help="Images in the HTML gallery.")] = 8,
    batch_size: BatchOpt = 32,
    theta: Annotated[float, typer.Option(help="UnionCAM denoising percentile.")] = 10.0,
    weights: WeightsOpt = None,
    engine: Annotated[Optional[Path], typer.Option("--engine", help="Exported engine directory (default: the export cache).")] = None,
    backend: Annotated[str, typer.Option(help="onnxruntime, tensorrt or torch.")] = "onnxruntime",
):
    """Score methods with Average Drop/Increase and Insertion/Deletion; writes results, tables, plots, report."""
    from .evaluate import EvaluateConfig, evaluate as run
    from .runtime.factory import EngineOptions

    if model is None and engine is None:
        model = DEFAULT_MODEL
    config = EvaluateConfig(list(images or []), labels, [m.strip() for m in methods.split(",") if m.strip()],
                            limit, out, save_maps, gallery, batch_size, theta,
                            EngineOptions(model, weights, backend, engine))
    with user_errors():
        if not images and labels is None:
            raise UnionCamError("give images or folders, or --labels CSV")
        aggregate = run(config)
    from .evaluate import markdown_table

    typer.echo(markdown_table(aggregate))
    typer.echo(f"wrote {out}/results.json, results.csv, table.md, curves.png, report.html")


@app.command()
def models():
    """List the zoo models."""
    for spec in MODELS.values():
        where = "offline" if spec.offline else "torchvision download or --weights"
        typer.echo(f"{spec.name:20s} target {spec.target_layer}; weights: {where}. {spec.summary}")


def main() -> None:
    """Console entry point."""
    app()
