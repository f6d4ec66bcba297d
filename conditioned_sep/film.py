"""FiLM (feature-wise linear modulation) and the conditioner that maps ``z`` to every block's gamma and beta.

FiLM sits after batch norm and before the activation (as in Conditioned-U-Net): ``x <- gamma * x + beta``.
"simple" FiLM has one gamma and beta per block (shared by its channels), "complex" one per channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

FILM_KINDS = ("simple", "complex")
Z_INPUTS = ("onehot", "embedding")


def film(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """``x (b, c, f, t)``, ``gamma, beta (b, c)`` or ``(b, 1)`` -> ``gamma * x + beta`` broadcast over f, t."""
    # b: batch, c: channels, f: freq, t: frames
    return torch.addcmul(beta[:, :, None, None], gamma[:, :, None, None], x)


class Conditioner(nn.Module):
    """Maps condition vectors ``z (b, n_stems)`` to ``[(gamma, beta), ...]``, one pair per conditioned block.

    ``z_input="onehot"`` feeds ``z`` to the MLP as is; ``"embedding"`` first maps it through a learned matrix
    ``E (n_stems, embedding_dim)`` as ``z @ E``, so a sum of stems embeds as the sum of their embeddings.
    The MLP (``hidden`` sizes, ReLU, optional dropout) feeds one linear head per block, initialised so that
    gamma is close to 1 and beta close to 0 (the model starts as its unconditioned twin, slightly perturbed).
    """

    def __init__(
        self,
        *,
        n_stems: int,
        block_channels: Sequence[int],
        kind: str = "complex",
        z_input: str = "onehot",
        hidden: Sequence[int] = (16, 64, 256),
        embedding_dim: int = 16,
        dropout: float = 0.0,
        head_init_std: float = 1e-2,
    ) -> None:
        super().__init__()
        if kind not in FILM_KINDS:
            raise ValueError(f"film must be one of {FILM_KINDS}, got {kind!r}")
        if z_input not in Z_INPUTS:
            raise ValueError(f"z_input must be one of {Z_INPUTS}, got {z_input!r}")
        self.n_stems, self.kind, self.z_input = n_stems, kind, z_input
        self.block_channels = tuple(block_channels)
        if z_input == "embedding":
            self.embedding = nn.Parameter(torch.randn(n_stems, embedding_dim) / embedding_dim**0.5)
            width = embedding_dim
        else:
            self.register_parameter("embedding", None)
            width = n_stems
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.mlp = nn.Sequential(*layers)
        self.heads = nn.ModuleList(
            nn.Linear(width, 2 * (ch if kind == "complex" else 1)) for ch in self.block_channels
        )
        for head in self.heads:
            nn.init.normal_(head.weight, std=head_init_std)
            n = head.out_features // 2
            with torch.no_grad():
                head.bias[:n].fill_(1.0)  # gamma
                head.bias[n:].zero_()  # beta

    def forward(self, z: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``z (b, n_stems)`` -> list of ``(gamma, beta)``, each ``(b, channels)`` (complex) or ``(b, 1)`` (simple)."""
        # b: batch, s: stems
        if z.ndim != 2 or z.shape[1] != self.n_stems:
            raise ValueError(f"z must be (batch, {self.n_stems}), got shape {tuple(z.shape)}")
        h = z @ self.embedding if self.embedding is not None else z
        h = self.mlp(h)
        return [tuple(head(h).chunk(2, dim=-1)) for head in self.heads]  # type: ignore[misc]
