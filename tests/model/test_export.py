import json

from cpcl.cli import main
from cpcl.model.checkpoint import build_model, model_fingerprint, save_checkpoint
from tests.conftest import tiny_config


def test_onnx_export_matches_pytorch(tiny_synth, tmp_path, capsys):
    config = tiny_config(tiny_synth)
    model = build_model(config.model, pretrained=False)
    save_checkpoint(tmp_path / "best.pt", model, config, epoch=0)
    args = ["export", "onnx", "--checkpoint", str(tmp_path / "best.pt"), "--out", str(tmp_path / "onnx"), "--int8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "--text-encoder" in out
    report = json.loads((tmp_path / "onnx" / "export.json").read_text())
    parity = report["max_abs_diff_vs_pytorch"]
    # the text graph is checked on ids cut after the last end token (dynamic length) and at full length
    assert parity["image_encoder"] < 1e-4 and parity["text_encoder"] < 1e-4
    assert report["text_input"]["dynamic_length"] is True
    assert 0.9 < parity["text_encoder_int8_min_cosine"] <= 1.0 + 1e-6
    assert report["fingerprint"] == model_fingerprint(model, config.to_dict())
    for file in ("image_encoder.onnx", "text_encoder.onnx", "text_encoder.int8.onnx"):
        assert (tmp_path / "onnx" / file).stat().st_size > 0
    assert main(args) == 2  # an export is not overwritten without --overwrite


def test_an_opset_that_cannot_be_written_or_loaded_leaves_nothing_behind(tiny_checkpoint, tmp_path, capsys):
    """An opset below the exporter's is refused before any work; one the exporter or onnxruntime cannot do fails
    naming it, and leaves no file that would block the rerun."""
    import pytest

    out = tmp_path / "onnx"
    with pytest.raises(SystemExit) as refused:
        main(["export", "onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--opset", "5"])
    assert refused.value.code == 2 and "must be at least 18, got 5" in capsys.readouterr().err
    assert main(["export", "onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--opset", "99"]) == 2
    err = capsys.readouterr().err
    assert ("--opset 99" in err or "cannot load the exported" in err) and "Traceback" not in err, err
    assert not out.exists() or not [p.name for p in out.iterdir() if not p.name.startswith(".")]
    assert main(["export", "onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 0
    assert json.loads((out / "export.json").read_text())["opset"] == 18
