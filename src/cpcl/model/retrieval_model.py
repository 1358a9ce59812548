"""The two-tower retrieval model: CLIP image and text encoders producing L2-normalised features."""

from __future__ import annotations

import open_clip
import torch
import torch.nn.functional as F
from torch import nn


def cut_after_last_end(tokens):
    """CLIP token ids ``(B, L)`` (a tensor or an array) cut after the batch's last end token: the end token has
    the largest id in CLIP's vocabulary, and with the causal mask nothing after it changes a feature."""
    return tokens[:, :int(tokens.argmax(1).max()) + 1]


class RetrievalModel(nn.Module):
    """Wraps an open_clip CLIP.

    Image feature = class token after the visual projection; text feature = end-of-text token after
    the text projection; both L2-normalised, shape ``(B, D)``.

    With CLIP's causal text mask the end-of-text feature depends only on the tokens before it, so the
    text tower runs on the batch's longest caption instead of all context positions
    (``truncate_text``): same output, a fraction of the cost.
    """

    def __init__(self, clip: nn.Module, truncate_text: bool = True):
        super().__init__()
        self.clip = clip
        self.truncate_text = truncate_text and self._supports_truncation(clip)

    @staticmethod
    def _supports_truncation(clip: nn.Module) -> bool:
        return (isinstance(clip, open_clip.CLIP) and getattr(clip, "text_pool_type", "argmax") == "argmax"
                and clip.attn_mask is not None)

    @property
    def embed_dim(self) -> int:
        return int(self.clip.visual.output_dim)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (B, 3, H, W) normalised -> (B, D) unit vectors."""
        return F.normalize(self.clip.encode_image(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, L) CLIP token ids -> (B, D) unit vectors."""
        if not self.truncate_text:
            return F.normalize(self.clip.encode_text(tokens), dim=-1)
        return self.encode_text_prefix(cut_after_last_end(tokens))

    def encode_text_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, L) CLIP token ids cut after the batch's last end token, L ≤ the context length ->
        (B, D) unit vectors. Traceable with a dynamic L (the ONNX text encoder is this function)."""
        clip = self.clip
        length = tokens.shape[1]
        eot = tokens.argmax(dim=-1)
        cast = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast) + clip.positional_embedding[:length].to(cast)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        proj = clip.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return F.normalize(x, dim=-1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens)
