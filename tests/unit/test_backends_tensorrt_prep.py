"""Everything the TensorRT backend does before touching a GPU: cache keys, profiles, calibration batches."""
import numpy as np
import pytest
from _backend_models import dev_image_paths

from streamcap.backends.calibration import OrtCalibrationReader, calibration_batches, calibration_images
from streamcap.backends.tensorrt_build import batch_profiles, engine_cache_key
from streamcap.model.encoder import SPECS, preprocess
from streamcap.model.images import read_image

BASE = dict(model_hash="365115ef49541c61", trt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
            precision="fp16", profiles=batch_profiles(8, 3))


@pytest.mark.parametrize("component, other", [
    ("model_hash", "0000000000000000"),
    ("trt_version", "10.7.0"),
    ("gpu_name", "NVIDIA GeForce RTX 4090"),
    ("compute_capability", "8.9"),
    ("precision", "int8"),
    ("profiles", batch_profiles(16, 3)),
    ("profiles", batch_profiles(8, 1)),
    ("input_size", 320),
])
def test_engine_cache_key_changes_with_each_component(component, other):
    # given the key of one engine, when one component changes, then so does the key
    assert engine_cache_key(**{**BASE, component: other}) != engine_cache_key(**BASE)


def test_engine_cache_key_is_stable():
    assert engine_cache_key(**BASE) == engine_cache_key(**dict(BASE))
    assert len(engine_cache_key(**BASE)) == 20


@pytest.mark.parametrize("max_batch, beam, step_max", [(8, 1, 8), (8, 3, 24), (1, 5, 5)])
def test_profiles_cover_batch_for_images_and_batch_times_beam_for_the_step(max_batch, beam, step_max):
    profiles = batch_profiles(max_batch, beam)
    assert profiles["encoder"] == profiles["prepare"] == (1, max_batch, max_batch)
    assert profiles["step"] == (1, step_max, step_max)


@pytest.fixture
def calib_dir(tmp_path, shared_data):
    """Ten real dev images (symlinked, never copied) and one file that is not an image."""
    for path in dev_image_paths(shared_data, 10):
        (tmp_path / path.name).symlink_to(path)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_calibration_images_are_an_even_sample_of_the_folder(calib_dir):
    everything = sorted(p for p in calib_dir.iterdir() if p.suffix == ".jpg")
    assert calibration_images(calib_dir, limit=100) == everything
    assert calibration_images(calib_dir, limit=5) == everything[::2]


@pytest.mark.parametrize("folder, message", [("missing", "calibration directory not found"), ("empty", "no images")])
def test_calibration_without_images_says_so(tmp_path, folder, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=message):
        calibration_images(tmp_path / folder)


def test_calibration_batches_are_real_images_preprocessed_like_inference(calib_dir):
    # given ten real images and a batch of four
    paths = calibration_images(calib_dir)
    spec = SPECS["efficientnet_lite0"]
    # when batched for TensorRT (equal batches only)
    batches = list(calibration_batches(paths, spec, batch_size=4))
    # then two full float32 batches come out, equal to what the encoder is fed
    assert [b.shape for b in batches] == [(4, 3, 224, 224)] * 2
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in batches)
    expected = preprocess([read_image(p) for p in paths[4:8]], spec).numpy()
    np.testing.assert_array_equal(batches[1], expected)
    # and the values are the lite0 normalisation of real pixels, about [-1, 1]
    assert -1.0 <= batches[0].min() < -0.5 and 0.5 < batches[0].max() <= 1.0


def test_unreadable_calibration_image_is_skipped_with_a_warning(calib_dir, caplog):
    (calib_dir / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    paths = calibration_images(calib_dir)
    batches = list(calibration_batches(paths, SPECS["efficientnet_lite0"], batch_size=5))
    assert len(batches) == 2  # the ten good images
    assert "broken.jpg: not a decodable image" in caplog.text


def test_onnxruntime_calibration_reader_keeps_the_last_partial_batch_and_rewinds(calib_dir):
    reader = OrtCalibrationReader(calibration_images(calib_dir), SPECS["efficientnet_lite0"], batch_size=4)
    sizes = []
    while (feed := reader.get_next()) is not None:
        sizes.append(feed["images"].shape[0])
    assert sizes == [4, 4, 2]
    reader.rewind()
    assert reader.get_next()["images"].shape == (4, 3, 224, 224)


@pytest.mark.parametrize("argv, message", [
    (["build-engine", "--precision", "int8"], "--precision int8 needs --calib DIR"),
    (["export", "--int8"], "--int8 needs --calib DIR"),
])
def test_commands_refuse_int8_without_calibration_images(argv, message, capsys):
    from streamcap.__main__ import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_build_engine_without_tensorrt_says_why_in_one_line(tmp_path, shared_data, capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    from _backend_models import make_checkpoint

    from streamcap.__main__ import main

    checkpoint = make_checkpoint(tmp_path, "merge", shared_data)
    assert main(["build-engine", "--model", str(checkpoint), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("streamcap build-engine: tensorrt: not installed") and "\n" not in err
