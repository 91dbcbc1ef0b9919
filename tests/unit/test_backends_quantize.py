"""INT8 encoder for CPU boxes: ONNX Runtime static quantization calibrated on real images."""
import onnx
import pytest
import torch
from _backend_models import calibration_folder, dev_frames, make_checkpoint

from streamcap.backends import load_captioner
from streamcap.backends.quantize import int8_encoder_path


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory, shared_data):
    return calibration_folder(tmp_path_factory.mktemp("calib"), shared_data, 16)


def test_int8_backend_is_calibrated_once_and_encodes_close_to_fp32(tmp_path, shared_data, calib_dir):
    # given a checkpoint and a folder of real images
    checkpoint = make_checkpoint(tmp_path, "merge", shared_data)
    # when the int8 onnxruntime backend is asked for with calibration images
    int8 = load_captioner(checkpoint, backend="onnxruntime", precision="int8", calib_dir=str(calib_dir))
    fp32 = load_captioner(checkpoint, backend="onnxruntime")
    # then it runs a quantized encoder (QDQ nodes) ...
    assert int8.name == "onnxruntime-cpu-int8"
    ops = {node.op_type for node in onnx.load(str(int8_encoder_path(int8.onnx))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    # ... whose grids on unseen dev images point the same way as the fp32 ones
    frames = dev_frames(shared_data, 8)
    got, expected = int8.encode(frames), fp32.encode(frames)
    assert got.shape == expected.shape
    # int8 is lossy: the measured grid cosines are 0.86-0.94 and the pooled ones 0.93-0.97
    grid_cosine = torch.nn.functional.cosine_similarity(got.flatten(1), expected.flatten(1))  # (B,)
    pooled_cosine = torch.nn.functional.cosine_similarity(got.mean(1), expected.mean(1))  # (B,)
    assert bool((grid_cosine > 0.8).all()) and bool((pooled_cosine > 0.9).all()), (grid_cosine, pooled_cosine)
    assert len(int8.caption(frames)) == 8
    # and a later start reuses the int8 file without calibration images
    again = load_captioner(checkpoint, backend="onnxruntime", precision="int8")
    assert again.name == "onnxruntime-cpu-int8"
