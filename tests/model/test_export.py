import json

from cpcl.cli import main
from cpcl.model.checkpoint import build_model, save_checkpoint
from tests.conftest import tiny_config


def test_onnx_export_matches_pytorch(tiny_synth, tmp_path, capsys):
    config = tiny_config(tiny_synth)
    save_checkpoint(tmp_path / "best.pt", build_model(config.model, pretrained=False), config, epoch=0)
    assert main(["export", "onnx", "--checkpoint", str(tmp_path / "best.pt"), "--out", str(tmp_path / "onnx")]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    report = json.loads((tmp_path / "onnx" / "export.json").read_text())
    parity = report["max_abs_diff_vs_pytorch"]
    assert parity["image_encoder"] < 1e-4 and parity["text_encoder"] < 1e-4 and parity["text_truncation"] < 1e-5
    assert (tmp_path / "onnx" / "image_encoder.onnx").stat().st_size > 0
