"""TensorRT engines built from the exported graphs; runs only where TensorRT 10 and CUDA are present."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))  # shared test models
from _backend_models import calibration_folder, dev_frames, make_checkpoint  # noqa: E402

from streamcap.backends import load_captioner  # noqa: E402
from streamcap.backends.export import cached_export  # noqa: E402
from streamcap.backends.tensorrt_backend import build_engines  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def trt():
    try:
        import tensorrt
    except ImportError as exc:
        pytest.skip(f"tensorrt is not installed ({exc}); it comes with JetPack or NVIDIA's containers")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not tensorrt.__version__.startswith("10."):
        pytest.skip(f"TensorRT {tensorrt.__version__}; the backend targets 10.x")
    return tensorrt


@pytest.fixture(scope="module")
def setup(trt, tmp_path_factory, shared_data):
    """A checkpoint, its export, and an engine cache in a temporary folder."""
    root = tmp_path_factory.mktemp("trt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        yield make_checkpoint(root, "attention", shared_data), dev_frames(shared_data, 8)


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory, shared_data):
    return calibration_folder(tmp_path_factory.mktemp("calib"), shared_data, 32)


def test_fp32_engines_caption_exactly_like_torch(setup):
    checkpoint, frames = setup
    reference = load_captioner(checkpoint, backend="torch")
    engine = load_captioner(checkpoint, backend="tensorrt", precision="fp32")
    assert engine.name == "tensorrt-fp32"
    grid = reference.encode(frames)
    torch.testing.assert_close(engine.encode(frames), grid, atol=1e-3, rtol=1e-3)
    assert [h.tokens for h in engine.decode(grid)[0]] == [h.tokens for h in reference.decode(grid)[0]]
    assert engine.caption(frames) == reference.caption(frames)


def test_fp16_step_is_close_to_torch_and_captions_run(setup):
    checkpoint, frames = setup
    reference = load_captioner(checkpoint, backend="torch")
    engine = load_captioner(checkpoint, backend="tensorrt", precision="fp16")
    grid = reference.encode(frames)
    memory = [b.prepare(grid)[0] for b in (reference, engine)]
    state = [b.init_state(m) for b, m in zip((reference, engine), memory)]
    tokens = torch.full((8,), reference.spec.vocab.start_index, dtype=torch.long)
    (expected, _), (got, _) = (b.step(tokens, s, m) for b, s, m in zip((reference, engine), state, memory))
    torch.testing.assert_close(got, expected, atol=5e-2, rtol=5e-2)
    assert len(engine.caption(frames + frames)) == 16  # more than max_batch: chunked


def test_int8_engine_is_calibrated_on_real_images_and_cached(setup, calib_dir):
    checkpoint, frames = setup
    onnx = cached_export(checkpoint)
    # when built with entropy calibration
    engines = build_engines(onnx, "int8", max_batch=8, beam_size=1, calib_dir=calib_dir, calib_images=32)
    stamps = {p.name: p.stat().st_mtime_ns for p in engines.glob("*.engine")}
    # then the engines and the calibration table exist, and a rebuild is a no-op
    assert sorted(stamps) == ["encoder.engine", "prepare.engine", "step.engine"]
    assert (engines / "encoder.calib").stat().st_size > 0
    assert build_engines(onnx, "int8", max_batch=8, beam_size=1) == engines
    assert {p.name: p.stat().st_mtime_ns for p in engines.glob("*.engine")} == stamps
    # and the int8 grids point the same way as fp32
    reference = load_captioner(checkpoint, backend="torch")
    engine = load_captioner(checkpoint, backend="tensorrt", precision="int8")
    got, expected = engine.encode(frames), reference.encode(frames)
    assert bool((torch.nn.functional.cosine_similarity(got.mean(1), expected.mean(1)) > 0.9).all())


def test_auto_picks_tensorrt_when_it_is_present(setup):
    checkpoint, _ = setup
    assert load_captioner(checkpoint, backend="auto", precision="fp16").name == "tensorrt-fp16"
