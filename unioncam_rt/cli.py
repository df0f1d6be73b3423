"""``unioncam-rt`` command line: parse options, build a config, call one library function."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import UnionCamError
from .runtime.backends import DEFAULT_BACKEND, backends_help, precisions_help
from .zoo.spec import DEFAULT_MODEL, MODELS, models_table

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, help=(
    "UnionCAM explanations of CNN classifiers, fast enough for production."))

MODEL_HELP = (f"A zoo name ({', '.join(MODELS)}), a Python factory PATH.py:FUNCTION or package.module:FUNCTION "
              "returning an nn.Module, or an ONNX classifier file (*.onnx).")
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help=MODEL_HELP + f" Default: {DEFAULT_MODEL}, "
                                                 "or the --engine directory's model.")]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", help="Weights: a state_dict .pth (loaded with weights_only=True; a zoo model takes its class count "
    "from it), or 'random[:SEED]' for tests. Default: zoo models' real ImageNet weights (efficientnet-lite0: "
    "offline; torchvision models: torchvision's weights API); a factory's own initialisation.")]
LabelsOpt = Annotated[Optional[Path], typer.Option(
    "--labels", help="Class names, one per line (or a JSON list); their count must match the logits. Default: "
    "ImageNet's for 1000 classes, else class_0, class_1...")]
TargetOpt = Annotated[Optional[str], typer.Option(
    "--target-layer", help="Where to take the activations: a module name as in named_modules() (torch), or an "
    "intermediate tensor name (ONNX; see unioncam-rt inspect). Default: the zoo's choice, else the last 4-D "
    "feature map before the logits.")]
InputSizeOpt = Annotated[Optional[str], typer.Option(
    "--input-size", help="H,W (or one number) the model takes. Default: zoo 224; ONNX: its declared size; else 224.")]
MeanOpt = Annotated[Optional[str], typer.Option(
    "--mean", help="Per-channel mean R,G,B of [0, 1] input, applied inside the graph. Default: the zoo model's, else ImageNet's.")]
StdOpt = Annotated[Optional[str], typer.Option("--std", help="Per-channel std R,G,B. Default: as --mean.")]
LayoutOpt = Annotated[Optional[str], typer.Option(
    "--layout", help="ONNX input layout: nchw or nhwc (graphs converted from TensorFlow/Keras). Default: detected.")]
TargetLayoutOpt = Annotated[Optional[str], typer.Option(
    "--target-layout", help="Layout of the target's output: nchw or nhwc, or tokens (torch models: a transformer's "
    "[B, N, C]). Default: read from the graph or the output's shape (see unioncam-rt inspect).")]
BatchOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", "-b", min=1, help="Masked images per engine call. Default: 16 (or fewer, to fit --max-memory).")]
MaxMemoryOpt = Annotated[Optional[str], typer.Option(
    "--max-memory", help="Peak-memory budget, e.g. 2GB: the masked batch size is capped to fit it (exported "
    "engines on the CPU). Default: no budget.")]


def model_source(model, weights, labels, target_layer, input_size, mean, std, layout, target_layout):
    """A `ModelSource` from the shared options, or None when nothing names a model."""
    from .sources import ModelSource

    if model is None:
        given = [n for n, v in (("--weights", weights), ("--labels", labels), ("--target-layer", target_layer),
                                ("--input-size", input_size), ("--mean", mean), ("--std", std),
                                ("--layout", layout)) if v is not None]
        if not given:
            return None
        model = DEFAULT_MODEL
    return ModelSource(model, weights, str(labels) if labels is not None else None, target_layer, input_size,
                       mean, std, layout, target_layout)


@contextmanager
def user_errors():
    """Turn a `UnionCamError` into one line on stderr and exit code 2 (no traceback)."""
    try:
        yield
    except UnionCamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


EngineOpt = Annotated[Optional[Path], typer.Option(
    "--engine", help="Exported engine directory (unioncam-rt export). Default: export the model once into the cache "
    "and reuse it.")]
BackendOpt = Annotated[Optional[str], typer.Option(help=f"{backends_help()}. Default: {DEFAULT_BACKEND}.")]
ProvidersOpt = Annotated[Optional[str], typer.Option(
    help="ONNX Runtime providers, comma-separated, e.g. CPUExecutionProvider. Default: TensorRT, CUDA, CPU as installed.")]
PrecisionOpt = Annotated[Optional[str], typer.Option(
    help=f"{precisions_help()}. Every mode but fp32 is approximate: see the README's fidelity table.")]
BudgetOpt = Annotated[Optional[str], typer.Option(
    "--budget", help="Region-map channels scored per image: 0 or exact (default), a count K (e.g. 128), or "
    "coverS[:K] (the fewest channels whose selection statistic covers share S of the total, at most K), optionally "
    "followed by /RULE[/FILL], e.g. cover0.85:320/energy. Approximate: see the README's fidelity table.")]
BudgetRuleOpt = Annotated[Optional[str], typer.Option(
    "--budget-rule", help="Which channels a budget scores: variance (default), energy, mass or gradcam.")]
BudgetFillOpt = Annotated[Optional[str], typer.Option(
    "--budget-fill", help="Weight of the channels a budget leaves unscored: zero (default), mean, estimate or group.")]
FastOpt = Annotated[bool, typer.Option(
    "--fast", help="The fastest CPU mode that keeps exact's branch: OpenVINO bf16 where available, a channel budget "
    "(cover0.85:320/energy), and images whose fused and region scores are within 0.02 decided again with fp32 "
    "channel scores (the channels covering 95% of the activation energy; exactly if still within 0.002) "
    "(README: Speed); explicit --backend/--precision/--budget win (an explicit --budget has no tie rule).")]
DeviceOpt = Annotated[str, typer.Option(help="torch device of the torch backend, e.g. cpu or cuda.")]
RayOpt = Annotated[bool, typer.Option("--ray", help="Run on Ray Data: a pool of workers, each holding one engine "
                                      "(pip install 'unioncam-rt[serve]'). Same files; resumes like a serial run.")]
RayAddressOpt = Annotated[Optional[str], typer.Option("--ray-address", help="With --ray: a Ray cluster (auto, "
                          "HOST:6379, ray://HOST:10001); implies --ray. Default: a local Ray in this process.")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=1, help="With --ray: workers (engines). Default: "
                       "one per CPU of the cluster.")]


def run_mode(backend, precision, budget, rule, fill, fast):
    """Backend, precision and channel budget from the options and the --fast preset."""
    from .presets import resolve_mode

    mode = resolve_mode(backend, precision, budget, fast, rule, fill)
    if fast:
        typer.echo(f"--fast: {mode.describe()}", err=True)
    return mode


def engine_options(engine, mode, providers, device):
    from .runtime.factory import EngineOptions

    provider_list = [p.strip() for p in providers.split(",") if p.strip()] if providers else None
    return EngineOptions(mode.backend, engine, provider_list, mode.precision, device)


@app.command()
def explain(
    images: Annotated[list[Path], typer.Argument(help="Image files and/or directories (not recursive).")],
    model: ModelOpt = None,
    target: Annotated[Optional[str], typer.Option("--class", "-c", help="Class index or name (the model's labels) to explain. Default: top-1.")] = None,
    method: Annotated[str, typer.Option(help="unioncam, gradcam, gradcampp, scorecam, groupcam or layercam.")] = "unioncam",
    theta: Annotated[float, typer.Option(help="UnionCAM denoising percentile, 0-100.")] = 10.0,
    batch_size: BatchOpt = None,
    max_memory: MaxMemoryOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("unioncam-out"),
    save_npy: Annotated[bool, typer.Option("--save-npy", help="Also write <stem>.cam.npy (float32, input resolution, [0, 1]).")] = False,
    weights: WeightsOpt = None,
    labels: LabelsOpt = None,
    target_layer: TargetOpt = None,
    input_size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    layout: LayoutOpt = None,
    target_layout: TargetLayoutOpt = None,
    engine: EngineOpt = None,
    backend: BackendOpt = None,
    providers: ProvidersOpt = None,
    precision: PrecisionOpt = None,
    device: DeviceOpt = "cpu",
    budget: BudgetOpt = None,
    budget_rule: BudgetRuleOpt = None,
    budget_fill: BudgetFillOpt = None,
    fast: FastOpt = False,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
):
    """Explain images: writes <stem>.overlay.png, <stem>.cam.png and <stem>.json per image."""
    from .jobs.explain import ExplainConfig, explain_images
    from .jobs.settings import RayRun

    with user_errors():
        source = model_source(model, weights, labels, target_layer, input_size, mean, std, layout, target_layout)
        mode = run_mode(backend, precision, budget, budget_rule, budget_fill, fast)
        config = ExplainConfig(list(images), out, source, engine_options(engine, mode, providers, device), target,
                               method, theta, batch_size, save_npy, max_memory, mode.budget,
                               RayRun.from_options(ray, ray_address, workers))
        code = explain_images(config)
    if config.ray is None:
        _EXIT_AT_ONCE.append(code)
    raise typer.Exit(code)


@app.command()
def export(
    model: Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)] = "vgg16",
    out: Annotated[Path, typer.Option("--out", "-o", help="Engine directory to write (replaced if it holds an earlier export).")] = Path("engines/vgg16"),
    weights: WeightsOpt = None,
    labels: LabelsOpt = None,
    target_layer: TargetOpt = None,
    input_size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    layout: LayoutOpt = None,
    target_layout: TargetLayoutOpt = None,
    opset: Annotated[int, typer.Option(help="ONNX opset of torch exports.")] = 17,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch of the TensorRT profiles.")] = 64,
    tensorrt: Annotated[bool, typer.Option("--tensorrt", help="Also build TensorRT engines (needs tensorrt and a GPU).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="With --tensorrt: build FP16 engines too.")] = False,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Compare the exported graphs with the reference on a sample.")] = True,
    list_layers: Annotated[bool, typer.Option("--list-layers", help="List candidate target layers and exit (as unioncam-rt inspect).")] = False,
):
    """Export a classifier: features.onnx (logits, activations, gradients), scores.onnx, weights.bin, manifest.json."""
    from .exporting.pipeline import ExportConfig, export_model

    if list_layers:
        inspect(model, weights, input_size, layout)
        return
    config = ExportConfig(model, out, weights, str(labels) if labels is not None else None, target_layer, input_size,
                          mean, std, layout, target_layout, opset, max_batch, tensorrt, fp16, check)
    with user_errors():
        report = export_model(config, progress=True)
    typer.echo(report.summary())


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help=MODEL_HELP + " Or an engine directory.")],
    weights: WeightsOpt = None,
    input_size: InputSizeOpt = None,
    layout: LayoutOpt = None,
):
    """List a model's candidate target layers (4-D feature maps) with their shapes, or describe an engine directory."""
    from .inspection import describe

    with user_errors():
        typer.echo(describe(model, weights, input_size, layout))


@app.command()
def quantize(
    engine: Annotated[Path, typer.Option("--engine", help="Exported engine directory to add scores.int8.onnx to.")],
    calibration: Annotated[list[Path], typer.Argument(help="Calibration photos (files or directories).")],
    limit: Annotated[int, typer.Option(min=1, help="Use at most this many calibration images.")] = 32,
):
    """Static INT8 (QDQ) scoring graph for the CPU fast mode (explain --precision int8)."""
    from .exporting.quantize import quantize_scores

    with user_errors():
        report = quantize_scores(engine, list(calibration), limit)
    typer.echo(report.summary())


@app.command()
def evaluate(
    images: Annotated[Optional[list[Path]], typer.Argument(help="Image files or folders (or use --labels-csv).")] = None,
    labels_csv: Annotated[Optional[Path], typer.Option("--labels-csv", help="CSV with file and class_index columns, e.g. ../shared/data/imagenet-sample-dev/labels.csv.")] = None,
    model: ModelOpt = None,
    methods: Annotated[str, typer.Option(help="Comma-separated: unioncam, gradcam, gradcampp, scorecam, groupcam, layercam.")] = "unioncam,gradcam,gradcampp,scorecam,groupcam,layercam",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Evaluate at most this many images.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; an interrupted run there is resumed.")] = Path("unioncam-eval"),
    save_maps: Annotated[bool, typer.Option("--save-maps", help="Keep every map as maps/<method>/<stem>.npy.")] = False,
    gallery: Annotated[int, typer.Option(min=0, help="Images in the HTML gallery.")] = 8,
    batch_size: BatchOpt = None,
    max_memory: MaxMemoryOpt = None,
    theta: Annotated[float, typer.Option(help="UnionCAM denoising percentile.")] = 10.0,
    weights: WeightsOpt = None,
    labels: LabelsOpt = None,
    target_layer: TargetOpt = None,
    input_size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    layout: LayoutOpt = None,
    target_layout: TargetLayoutOpt = None,
    engine: EngineOpt = None,
    backend: BackendOpt = None,
    precision: PrecisionOpt = None,
    budget: BudgetOpt = None,
    budget_rule: BudgetRuleOpt = None,
    budget_fill: BudgetFillOpt = None,
    fast: FastOpt = False,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
):
    """Score methods with Average Drop/Increase and Insertion/Deletion; writes results, tables, plots, report."""
    from .jobs.evaluate import EvaluateConfig, markdown_table
    from .jobs.evaluate import evaluate as run
    from .jobs.settings import RayRun

    with user_errors():
        if labels is not None and labels_csv is None and labels.suffix.lower() == ".csv":
            typer.echo(f"note: reading {labels} as the ground-truth CSV (--labels-csv); --labels names classes", err=True)
            labels_csv, labels = labels, None
        if not images and labels_csv is None:
            raise UnionCamError("give images or folders, or --labels-csv CSV")
        source = model_source(model, weights, labels, target_layer, input_size, mean, std, layout, target_layout)
        mode = run_mode(backend, precision, budget, budget_rule, budget_fill, fast)
        config = EvaluateConfig(list(images or []), labels_csv, [m.strip() for m in methods.split(",") if m.strip()],
                                limit, out, save_maps, gallery, batch_size, theta,
                                engine_options(engine, mode, None, "cpu"), source, max_memory, mode.budget,
                                RayRun.from_options(ray, ray_address, workers))
        aggregate = run(config)
    typer.echo(markdown_table(aggregate))
    typer.echo(f"wrote {out}/results.json, results.csv, table.md, curves.png, report.html")


@app.command()
def models():
    """List the zoo models."""
    typer.echo(models_table())


from .serve.command import serve_command  # noqa: E402  (typer only; ray is imported when it runs)

app.command("serve")(serve_command)


# set by a finished explain run in this process: its files are written (atomically, each
# closed) and nothing it started needs the interpreter's teardown, which costs about 75 ms
# after the map a person waits for (README: Latency); so main() ends the process at once
_EXIT_AT_ONCE: list[int] = []


def main() -> None:
    """Console entry point."""
    try:
        app()
    except SystemExit:
        if _EXIT_AT_ONCE:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(_EXIT_AT_ONCE[-1])
        raise
