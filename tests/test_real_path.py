"""The researcher's real path, rehearsed in seconds: ``benchmarks/real_path.py`` with an OpenAI-format
TorchScript archive of a small width and depth (OpenAI's names) instead of ViT-B-16. Two gloo ranks train the
shipped CUHK-PEDES config for 2 epochs with clustering on; eval, index build, search, ONNX export and resume
must all run the network that was trained (QuickGELU, IRRA's recipe)."""

from __future__ import annotations

from benchmarks.real_path import rehearse, write_openai_archive


def test_openai_archive_is_format_true(tmp_path):
    import torch

    from cpcl.model.backbone import read_state_dict

    path = write_openai_archive(tmp_path / "ViT-micro.pt", "cpcl-vit-micro")
    archive = torch.jit.load(str(path))
    names = set(archive.state_dict())
    assert {"input_resolution", "context_length", "vocab_size", "visual.proj", "text_projection",
            "visual.transformer.resblocks.0.attn.in_proj_weight", "token_embedding.weight"} <= names
    assert archive.state_dict()["visual.proj"].dtype == torch.float16
    assert tuple(archive.state_dict()["visual.positional_embedding"].shape)[0] == 1 + 4 * 4  # square grid
    state, is_jit = read_state_dict(path)
    assert is_jit and "input_resolution" not in state


def test_real_path_rehearsal(tmp_path):
    figures = rehearse(tmp_path, arch="cpcl-vit-micro", nproc=2, epochs=2, batch_size=8,
                       extra_sets=("model.arch=cpcl-vit-micro", "model.image_size=[64,32]",
                                   "train.eval_batch_size=16", "data.num_workers=2"))
    checks = figures["checks"]
    assert checks["best.pt records QuickGELU"] is True
    for name in ("load_checkpoint images", "load_checkpoint texts", "index embeddings", "onnx images",
                 "onnx texts", "eval = results.json best-on-val", "resume: same test rows"):
        assert checks[name] <= 1e-5, (name, checks[name])
    assert checks["search top-1 = held ranking"] and checks["last.pt optimiser eps = IRRA's 1e-3"]
    assert checks["resume: config.yaml records QuickGELU"]
