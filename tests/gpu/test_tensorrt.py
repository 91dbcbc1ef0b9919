"""TensorRT engines built from the exported graphs; runs only where TensorRT 10 or 11 and CUDA are present.

Everything before the real TensorRT (typed graphs, flags, profiles, cache,
binding) is tested on any machine against a stand-in: tests/unit/test_tensorrt_build.py.
"""
import pytest
import torch
from _backend_models import calibration_folder, make_checkpoint

from streamcap.backends import load_captioner
from streamcap.backends.export import cached_export
from streamcap.backends.quantize import int8_encoder_path
from streamcap.backends.tensorrt_build import SUPPORTED_MAJORS, build_engines, major_version

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def trt():
    try:
        import tensorrt
    except ImportError as exc:
        pytest.skip(f"tensorrt is not installed ({exc}); it comes with JetPack or NVIDIA's containers")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if major_version(tensorrt) not in SUPPORTED_MAJORS:
        pytest.skip(f"TensorRT {tensorrt.__version__}; the backend builds with TensorRT 10 or 11")
    return tensorrt


@pytest.fixture(scope="module")
def setup(trt, tmp_path_factory, shared_data, real_frames):
    """A checkpoint, its export, and an engine cache in a temporary folder."""
    root = tmp_path_factory.mktemp("trt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        yield make_checkpoint(root, "attention", shared_data), real_frames[:8]


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory, shared_data):
    return calibration_folder(tmp_path_factory.mktemp("calib"), shared_data, 32)


def test_fp32_engines_caption_exactly_like_torch(setup):
    checkpoint, frames = setup
    reference = load_captioner(checkpoint, backend="torch")
    engine = load_captioner(checkpoint, backend="tensorrt", precision="fp32")
    assert engine.name == "tensorrt-fp32" and "built fp32 engines" in engine.selection
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
    tokens = torch.full((8,), reference.spec.vocab.start_index, dtype=torch.long, device=grid.device)
    (expected, _), (got, _) = (b.step(tokens, s, m) for b, s, m in zip((reference, engine), state, memory))
    torch.testing.assert_close(got, expected, atol=5e-2, rtol=5e-2)
    assert len(engine.caption(frames + frames)) == 16  # more than max_batch: chunked


def test_int8_engine_is_calibrated_on_real_images_and_cached(setup, calib_dir, trt):
    checkpoint, frames = setup
    onnx = cached_export(checkpoint)
    # when built with explicit Q/DQ nodes calibrated on real images
    engines, built = build_engines(onnx, "int8", max_batch=8, beam_size=1, calib_dir=calib_dir, calib_images=32, trt=trt)
    stamps = {p.name: p.stat().st_mtime_ns for p in engines.glob("*.engine")}
    # then the engines and the quantized encoder exist, and a rebuild is a no-op
    assert built and sorted(stamps) == ["encoder.engine", "prepare.engine", "step.engine"]
    assert int8_encoder_path(onnx, "tensorrt").stat().st_size > 0
    assert build_engines(onnx, "int8", max_batch=8, beam_size=1, trt=trt) == (engines, False)
    assert {p.name: p.stat().st_mtime_ns for p in engines.glob("*.engine")} == stamps
    # and the int8 grids point the same way as fp32
    reference = load_captioner(checkpoint, backend="torch")
    engine = load_captioner(checkpoint, backend="tensorrt", precision="int8", max_batch=8)
    got, expected = engine.encode(frames), reference.encode(frames)
    assert bool((torch.nn.functional.cosine_similarity(got.mean(1), expected.mean(1)) > 0.9).all())


def test_auto_picks_tensorrt_when_it_is_present_and_says_so(setup, trt):
    checkpoint, _ = setup
    captioner = load_captioner(checkpoint, backend="auto", precision="fp16")
    assert captioner.name == "tensorrt-fp16"
    assert f"tensorrt {trt.__version__}: " in captioner.selection and "fp16 engines" in captioner.selection
