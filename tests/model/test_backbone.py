import open_clip
import pytest
import torch

from cpcl.model.backbone import (
    WeightsError,
    build_clip,
    build_tokenizer,
    read_state_dict,
    resize_visual_pos_embed,
)
from cpcl.model.retrieval_model import RetrievalModel


def test_truncated_text_tower_matches_full_context():
    torch.manual_seed(0)
    clip = build_clip("cpcl-vit-micro", (64, 32))
    model = RetrievalModel(clip).eval()
    assert model.truncate_text
    tokens = build_tokenizer("cpcl-vit-micro")(["a man", "a woman in a long red coat with a black handbag"])
    fast = model.encode_text(tokens)
    full = torch.nn.functional.normalize(clip.encode_text(tokens), dim=-1)
    assert fast.shape == (2, 64)
    assert torch.allclose(fast, full, atol=1e-6)
    assert torch.allclose(fast.norm(dim=-1), torch.ones(2))


def test_tokenizer_truncation_keeps_end_token():
    tok = build_tokenizer("cpcl-vit-micro")
    tokens = tok(["word " * 200])
    assert tokens.shape == (1, 77)
    assert tokens[0, -1] == tokens.max()  # the end-of-text token, kept at the last position


def test_pos_embed_resize_keeps_class_and_is_bilinear():
    grid = torch.arange(4.0).reshape(4, 1).repeat(1, 3)  # a 2x2 grid, 3 channels, values 0..3
    pos = torch.cat([torch.full((1, 3), -7.0), grid])
    out = resize_visual_pos_embed(pos, (4, 2))
    assert out.shape == (1 + 8, 3)
    assert torch.equal(out[0], pos[0])
    expected = torch.nn.functional.interpolate(torch.arange(4.0).reshape(1, 1, 2, 2), size=(4, 2),
                                               mode="bilinear", align_corners=False).flatten()
    assert torch.allclose(out[1:, 0], expected)


def test_non_square_model_loads_square_checkpoint(tmp_path):
    square = build_clip("cpcl-vit-micro", (64, 64))  # 4x4 grid
    path = tmp_path / "square.pt"
    torch.save(square.state_dict(), path)
    tall = build_clip("cpcl-vit-micro", (96, 32), pretrained=str(path))  # 6x2 grid
    assert tuple(tall.visual.grid_size) == (6, 2)
    assert torch.equal(tall.visual.class_embedding, square.visual.class_embedding)
    assert tall.visual.positional_embedding.shape[0] == 13
    tall.encode_image(torch.zeros(1, 3, 96, 32))


def test_open_clip_state_dict_variants(tmp_path):
    src = build_clip("cpcl-vit-micro", (64, 32))
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "w.pt")
    loaded = build_clip("cpcl-vit-micro", (64, 32), pretrained=str(tmp_path / "w.pt"))
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_openai_torchscript_archive(tmp_path):
    """OpenAI distributes TorchScript archives; their extra keys are dropped and QuickGELU is chosen."""
    src = build_clip("cpcl-vit-micro", (64, 32), quick_gelu=True).eval()

    class Holder(torch.nn.Module):
        def __init__(self, clip):
            super().__init__()
            for name, child in clip.named_children():
                self.add_module(name, child)
            for name, param in clip.named_parameters(recurse=False):
                self.register_parameter(name, param)
            self.register_buffer("input_resolution", torch.tensor(64))

        def forward(self, x):
            return x

    archive = torch.jit.trace(Holder(src), torch.zeros(1))
    path = tmp_path / "ViT-micro.pt"
    archive.save(str(path))
    state, is_jit = read_state_dict(path)
    assert is_jit and "input_resolution" not in state
    loaded = build_clip("cpcl-vit-micro", (64, 32), pretrained=str(path))
    assert isinstance(loaded.visual.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
    x = torch.randn(2, 3, 64, 32)
    assert torch.allclose(loaded.encode_image(x), src.encode_image(x), atol=1e-6)


def test_mismatched_weights_are_reported(tmp_path):
    src = build_clip("cpcl-vit-micro", (64, 32))
    state = src.state_dict()
    state.pop("ln_final.weight")
    state["extra.key"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"missing from file \(1\): ln_final.weight") as info:
        build_clip("cpcl-vit-micro", (64, 32), pretrained=str(tmp_path / "bad.pt"))
    assert "extra.key" in str(info.value)
    with pytest.raises(WeightsError, match="shape mismatch"):
        build_clip("cpcl-vit-tiny", (64, 32), pretrained=str(tmp_path / "bad.pt"))


def test_unknown_tag_arch_and_missing_file():
    with pytest.raises(WeightsError, match="tags: .*openai"):
        build_clip("ViT-B-16", (384, 128), pretrained="no-such-tag")
    with pytest.raises(WeightsError, match="unknown architecture"):
        build_clip("ViT-Q-99", (64, 32))
    with pytest.raises(WeightsError, match="not found"):
        build_clip("cpcl-vit-micro", (64, 32), pretrained="/nonexistent/w.pt")
    with pytest.raises(WeightsError, match="unknown built-in"):
        build_clip("cpcl-vit-micro", (64, 32), pretrained="cpcl:nope")


def test_vit_b16_at_384x128_grid():
    model = build_clip("ViT-B-16", (384, 128))
    assert tuple(model.visual.grid_size) == (24, 8)
    assert model.visual.positional_embedding.shape == (1 + 24 * 8, 768)


def test_packaged_pretrained_weights_retrieve_synthpedes_zero_shot(tmp_path):
    """cpcl:synthclip-tiny loads offline and ranks an unseen SynthPedes set far above chance."""
    from cpcl.data.formats import load_annotations
    from cpcl.data.synth import generate_synthpedes
    from cpcl.evaluation import chance_metrics
    from cpcl.evaluation.evaluate import EvalSplit
    from cpcl.model.preprocess import Preprocess

    generate_synthpedes(tmp_path, num_ids=40, seed=123, val_ids=1, test_ids=30, workers=1, montage=False)
    split = EvalSplit(load_annotations("cuhk-pedes", tmp_path).split("test"), build_tokenizer("cpcl-vit-tiny"),
                      Preprocess((128, 64)))
    model = RetrievalModel(build_clip("cpcl-vit-tiny", (128, 64), pretrained="cpcl:synthclip-tiny")).eval()
    metrics = split.evaluate(model, torch.device("cpu"))
    chance = chance_metrics(split.query_ids, split.gallery_ids)
    assert metrics.rank1 > 3 * chance.rank1 and metrics.rank1 > 20


def test_the_preprocessing_normalises_as_openai_clip():
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from cpcl.model.preprocess import Preprocess

    assert Preprocess((224, 224)).mean == tuple(OPENAI_DATASET_MEAN)
    assert Preprocess((224, 224)).std == tuple(OPENAI_DATASET_STD)
