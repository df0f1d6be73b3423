"""The C++ embedding (cpp/, OpenVINO's CPU runtime) against the Python runtime.

The project is built once per session (incrementally, in pytest's cache folder) and then:
its unit tests run against numpy/Pillow reference data (through ctest); its engine tests
(two threads on one Engine, batching, errors) run on the session's EfficientNet-Lite0
export; `unioncam-cpp explain` is compared with `Explainer` on ONNX Runtime on real
development photos, one of them converted to PNG; tampered engines, bad images and bad
options get the documented exit codes and messages.

Skipped, with the reason, only where cmake, a C++ compiler, the openvino wheel or a system
library the build needs (libpng, libjpeg, nlohmann-json: the configure step names it) is
missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import DEV_IMAGES, dev_rows

pytestmark = pytest.mark.cpp

CPP = Path(__file__).resolve().parents[1] / "cpp"
PHOTOS = ("n01440764_tench.JPEG", "n02007558_flamingo.JPEG", "n01530575_brambling.JPEG")


def _missing_tool() -> str | None:
    if shutil.which("cmake") is None:
        return "cmake is not installed"
    if not any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "c++", "g++", "clang++")):
        return "no C++ compiler (c++, g++ or clang++) found"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "the openvino wheel is not installed (pip install 'unioncam-rt[cpp]')"
    return None


def _run(args: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


def missing_package(output: str) -> str | None:
    """The configure step's message about a missing package, on one line (None if none).

    cpp/CMakeLists.txt says ``missing system package: NAME (apt-get install PACKAGE)``; CMake's
    own ``Could NOT find ...`` and ``Could not find a package configuration file ...`` count
    too. CMake wraps long messages: the indented lines that follow are joined.
    """
    lines = output.splitlines()
    for i, line in enumerate(lines):
        text = line.strip()
        if text.startswith(("missing system package:", "Could NOT find", "Could not find a package")):
            for more in lines[i + 1:]:
                if not more.startswith("  ") or not more.strip():
                    break
                text += " " + more.strip()
            return text
    return None


def configure(build: Path, *extra) -> subprocess.CompletedProcess:
    import openvino

    openvino_dir = Path(openvino.__file__).parent / "cmake"
    return _run(["cmake", "-S", CPP, "-B", build, "-DCMAKE_BUILD_TYPE=Release", f"-DOpenVINO_DIR={openvino_dir}",
                 f"-DUNIONCAM_PYTHON={sys.executable}", *extra])


@pytest.fixture(scope="session")
def cpp_build(request) -> Path:
    """cpp/ configured and built (Release, -j2) into pytest's cache; rebuilt incrementally."""
    reason = _missing_tool()
    if reason:
        pytest.skip(reason)
    build = Path(request.config.cache.mkdir("unioncam-cpp-build"))
    cache = build / "CMakeCache.txt"
    if cache.is_file() and f"CMAKE_HOME_DIRECTORY:INTERNAL={CPP}\n" not in cache.read_text():
        shutil.rmtree(build)  # configured for another checkout
        build.mkdir()
    configured = configure(build)
    if configured.returncode != 0:
        missing = missing_package(configured.stdout + "\n" + configured.stderr)
        if missing:  # a system library CI could not install: skip and say which
            pytest.skip(f"C++ build not configured: {missing}")
        pytest.fail(f"cmake configure failed:\n{configured.stdout[-3000:]}\n{configured.stderr[-3000:]}")
    built = _run(["cmake", "--build", build, "-j", "2"])
    assert built.returncode == 0, f"C++ build failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
    return build


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> list[Path]:
    """Two development JPEGs and one converted to PNG."""
    rows = {r["file"] for r in dev_rows()}
    if not set(PHOTOS) <= rows:
        pytest.skip(f"development photos {PHOTOS} not found in {DEV_IMAGES}")
    from PIL import Image

    png = tmp_path_factory.mktemp("png") / "n01530575_brambling.png"
    with Image.open(DEV_IMAGES / PHOTOS[2]) as image:
        image.save(png)
    return [DEV_IMAGES / PHOTOS[0], DEV_IMAGES / PHOTOS[1], png]


def cli(build: Path, *args) -> subprocess.CompletedProcess:
    return _run([build / "unioncam-cpp", *args], timeout=300)


def test_unit_tests_against_numpy_and_pillow(cpp_build):
    result = _run(["ctest", "--test-dir", cpp_build, "--output-on-failure"], timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "100% tests passed" in result.stdout
    detail = _run([cpp_build / "unioncam_unit_tests", "--reference", cpp_build / "unit-reference"])
    assert detail.returncode == 0, detail.stdout + detail.stderr
    print(detail.stdout)
    assert "0 failed" in detail.stdout


def test_engine_threads_batching_and_errors(cpp_build, lite_engine_dir, photos):
    result = _run([cpp_build / "unioncam_engine_tests", lite_engine_dir, photos[0], photos[2]], timeout=300)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_matches_python_runtime(cpp_build, lite_engine_dir, photos, tmp_path):
    from unioncam_rt.explainer import Explainer

    out = tmp_path / "cpp"
    result = cli(cpp_build, "explain", "--engine", lite_engine_dir, "--out", out, "--save-npy", *photos)
    assert result.returncode == 0, result.stderr

    explainer = Explainer(engine_dir=lite_engine_dir)  # masked batch 16 on both sides by default
    python = {path: outcome for path, outcome in explainer.iter_files(photos)}
    for path in photos:
        ref = python[path]
        record = json.loads((out / f"{path.stem}.json").read_text())
        summary = ref.summary()
        assert list(record) == list(summary)  # the same keys in the same order
        assert record["backend"] == "openvino-cpp fp32" and record["budget"] is None
        assert record["class_index"] == ref.class_index
        assert [t["class_index"] for t in record["top5"]] == [t["class_index"] for t in summary["top5"]]
        assert record["probability"] == pytest.approx(ref.probability, abs=1e-4)
        assert record["branch"] == ref.branch
        for beta in ("beta_denoise", "beta_region", "beta_fused"):
            assert record[beta] == pytest.approx(summary[beta], abs=1e-4), beta
        assert record["masked_passes"] == ref.masked_passes
        assert record["original_size"] == summary["original_size"]
        assert record["input_size"] == summary["input_size"]
        cam = np.load(out / f"{path.stem}.cam.npy")
        assert cam.dtype == np.float32 and cam.shape == ref.cam.shape
        pearson = np.corrcoef(cam.ravel(), ref.cam.ravel())[0, 1]
        print(f"{path.name}: branch {record['branch']}, max |beta diff| "
              f"{max(abs(record[b] - summary[b]) for b in ('beta_denoise', 'beta_region', 'beta_fused')):.2e}, "
              f"Pearson {pearson:.8f}")
        assert pearson >= 0.999
        from PIL import Image

        with Image.open(out / f"{path.stem}.cam.png") as png:
            assert png.mode == "L" and png.size == (cam.shape[1], cam.shape[0])
            assert np.array_equal(np.asarray(png), np.round(cam * 255).astype(np.uint8))
    assert not list(out.glob(".*.tmp"))


def budget_specs() -> list[str]:
    """Fixed sizes with every fill, and the --fast preset's adaptive budget."""
    try:
        from unioncam_rt.presets import FAST_BUDGET

        fast = FAST_BUDGET.spec()
    except ImportError:
        fast = "cover0.85:320/energy/zero"
    return ["128/variance/zero", fast, "64/mass/mean", "96/energy/estimate", "64/variance/group"]


@pytest.mark.parametrize("spec", budget_specs())
def test_budget_matches_python_budget(cpp_build, lite_engine_dir, photos, tmp_path, spec):
    """UnionCAM under a channel budget: same channels, fills, passes and JSON on both sides."""
    from unioncam_rt.explainer import Explainer
    from unioncam_rt.method.budget import Budget

    two = photos[:2]
    out = tmp_path / "out"
    result = cli(cpp_build, "explain", "--engine", lite_engine_dir, "--budget", spec, "--save-npy", "--out", out, *two)
    assert result.returncode == 0, result.stderr
    python = dict(Explainer(engine_dir=lite_engine_dir, budget=spec, batch_size=16).iter_files(two))
    for path in two:
        ref = python[path]
        summary = ref.summary()
        record = json.loads((out / f"{path.stem}.json").read_text())
        assert record["budget"] == summary["budget"] == Budget.parse(spec).describe()
        assert record["class_index"] == ref.class_index
        assert record["branch"] == ref.branch
        assert record["masked_passes"] == ref.masked_passes
        for beta in ("beta_denoise", "beta_region", "beta_fused"):
            assert record[beta] == pytest.approx(summary[beta], abs=1e-4), beta
        cam = np.load(out / f"{path.stem}.cam.npy")
        pearson = np.corrcoef(cam.ravel(), ref.cam.ravel())[0, 1]
        print(f"{spec} {path.name}: {record['masked_passes']} passes, branch {record['branch']}, max |beta diff| "
              f"{max(abs(record[b] - summary[b]) for b in ('beta_denoise', 'beta_region', 'beta_fused')):.2e}, "
              f"Pearson {pearson:.8f}")
        assert pearson >= 0.999


def test_tampered_engine_is_refused(cpp_build, lite_engine_dir, photos, tmp_path):
    engine = tmp_path / "engine"
    shutil.copytree(lite_engine_dir, engine)
    manifest = json.loads((engine / "manifest.json").read_text())
    victim = engine / sorted(manifest["files"])[-1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = cli(cpp_build, "explain", "--engine", engine, "--out", tmp_path / "out", photos[0])
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {victim}: sha256 differs from the manifest (changed or tampered); "
                                     "re-export")
    assert not (tmp_path / "out").exists()

    victim.unlink()
    result = cli(cpp_build, "explain", "--engine", engine, photos[0])
    assert result.returncode == 2 and "listed in the manifest but missing" in result.stderr

    manifest["schema_version"] = 99
    (engine / "manifest.json").write_text(json.dumps(manifest))
    result = cli(cpp_build, "explain", "--engine", engine, photos[0])
    assert result.returncode == 2 and "schema version 99" in result.stderr

    manifest["schema_version"] = 1  # read by Python only before schema 2, like here
    (engine / "manifest.json").write_text(json.dumps(manifest))
    result = cli(cpp_build, "explain", "--engine", engine, photos[0])
    assert result.returncode == 2
    assert result.stderr == (f"error: {engine / 'manifest.json'}: schema version 1, this unioncam C++ runtime reads 2; "
                             "re-export the model\n")


def test_bad_image_is_listed_and_the_others_written(cpp_build, lite_engine_dir, photos, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    result = cli(cpp_build, "explain", "--engine", lite_engine_dir, "--method", "gradcam", "--out", out,
                 bad, photos[0], tmp_path / "missing.png")
    assert result.returncode == 1, result.stderr
    assert "2 of 3 images failed" in result.stderr
    assert f"{bad}: not a PNG or JPEG image" in result.stderr
    assert "missing.png: no such file" in result.stderr
    record = json.loads((out / f"{photos[0].stem}.json").read_text())
    assert record["method"] == "gradcam" and record["masked_passes"] == 0 and record["theta"] is None
    assert record["budget"] is None


@pytest.mark.parametrize("args, message", [
    (["--class", "1000"], "class index 1000 out of range; this model has classes 0..999"),
    (["--class", "no-such-class"], "unknown class name 'no-such-class'"),
    (["--method", "layercam"], "unknown method 'layercam'; available: unioncam, gradcam, scorecam"),
    (["--budget", "-1"], "--budget '-1': give 0 (exact), a channel count K, or coverSHARE[:K]"),
    (["--budget", "128/energy/zero/x"], "--budget '128/energy/zero/x': give SIZE[/RULE[/FILL]]"),
    (["--budget", "cover1.5"], "budget cover 1.5 must lie in (0, 1]"),
    (["--budget", "64", "--budget-rule", "sideways"],
     "budget rule 'sideways' unknown; available: variance, energy, mass, gradcam"),
    (["--budget-fill", "nearest"], "budget fill 'nearest' unknown; available: zero, mean, estimate, group"),
    (["--precision", "fp16"], "unknown precision 'fp16'"),
    (["--theta", "150"], "must be a percentile in [0, 100]"),
])
def test_bad_options_exit_2_before_any_work(cpp_build, lite_engine_dir, photos, tmp_path, args, message):
    out = tmp_path / "out"
    result = cli(cpp_build, "explain", "--engine", lite_engine_dir, "--out", out, *args, photos[0])
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


def test_missing_system_library_is_named(cpp_build, tmp_path):
    """A configure step without libpng fails with the one line the session fixture skips with."""
    result = configure(tmp_path / "build", "-DCMAKE_DISABLE_FIND_PACKAGE_PNG=TRUE")
    assert result.returncode != 0
    assert missing_package(result.stdout + "\n" + result.stderr) == ("missing system package: libpng "
                                                                     "(apt-get install libpng-dev)")
    assert missing_package("CMake Error at x.cmake:1 (message):\n  Could NOT find JPEG (missing: JPEG_LIBRARY\n"
                           "  JPEG_INCLUDE_DIR)\n\n") == "Could NOT find JPEG (missing: JPEG_LIBRARY JPEG_INCLUDE_DIR)"
    assert missing_package("-- Configuring done") is None


def test_budget_bf16_and_the_embedding_example(cpp_build, lite_engine_dir, photos, tmp_path):
    out = tmp_path / "out"
    result = cli(cpp_build, "explain", "--engine", lite_engine_dir, "--method", "scorecam", "--budget", "cover0.5:8",
                 "--budget-rule", "energy", "--budget-fill", "mean", "--precision", "bf16", "--out", out, photos[0])
    assert result.returncode == 0, result.stderr
    record = json.loads((out / f"{photos[0].stem}.json").read_text())
    assert record["budget"] == {"channels": 8, "cover": 0.5, "rule": "energy", "fill": "mean"}
    assert record["backend"] == "openvino-cpp bf16" and "precision" not in record
    assert 0 < record["masked_passes"] <= 8

    # bf16 runs only the per-channel passes in bf16 (as the Python runtime): the features
    # pass, hence the class probability, and the three map scores stay fp32.
    fp32_out, bf16_out = tmp_path / "fp32", tmp_path / "bf16"
    for precision, folder in (("fp32", fp32_out), ("bf16", bf16_out)):
        done = cli(cpp_build, "explain", "--engine", lite_engine_dir, "--precision", precision, "--budget", "64",
                   "--out", folder, photos[0])
        assert done.returncode == 0, done.stderr
    exact, reduced = (json.loads((f / f"{photos[0].stem}.json").read_text()) for f in (fp32_out, bf16_out))
    assert reduced["backend"] == "openvino-cpp bf16"
    assert reduced["class_index"] == exact["class_index"]
    assert reduced["probability"] == pytest.approx(exact["probability"], abs=1e-6)
    assert reduced["beta_region"] == pytest.approx(exact["beta_region"], abs=2e-2)

    example = _run([cpp_build / "unioncam_embed_example", lite_engine_dir, photos[0]], timeout=300)
    assert example.returncode == 0, example.stderr
    assert example.stdout.startswith("tench p=")
