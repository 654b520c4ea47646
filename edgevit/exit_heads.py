"""Exit heads (LGViT): small classifiers attached after an intermediate block.

- ``local``: local perception on the token grid (1x1 conv, depthwise 3x3, 1x1, residual),
  good at shallow exits where features are still local;
- ``global``: global aggregation, attention from every token to an average-pooled summary
  of the tokens (spatial reduction), good at deep exits;
- ``linear``: LayerNorm, mean pool, linear classifier (the simple baseline).

Every head returns (logits, embedding). The embedding has the backbone's final feature
width so a feature-distillation loss can pull it towards the final pre-logits; the linear
head has none. Heads take [B, N, C] tokens plus the static grid facts they were built
with, so each exported stage graph has fixed shapes apart from the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HeadSpec:
    """Everything needed to rebuild a head (stored in the pass record)."""

    kind: str  # local | global | linear
    block: int  # 0-based block the head reads
    dim: int  # token width at that block
    grid: tuple[int, int] | None  # patch-token grid, None after token reduction
    prefix: int  # class/distillation/register tokens in front of the patch tokens
    embed_dim: int  # final feature width (target of the feature loss)
    num_classes: int
    pool: int = 2  # global head: keys/values pooled to pool x pool
    tokens: int = 0  # tokens the head reads at the model's input size (sizes the feature cache)


class LocalPerceptionHead(nn.Module):
    def __init__(self, spec: HeadSpec):
        super().__init__()
        if spec.grid is None:
            raise ValueError("a local-perception head needs the token grid")
        c = spec.dim
        self.prefix, self.grid = spec.prefix, spec.grid
        self.expand = nn.Conv2d(c, c, 1)
        self.depthwise = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.reduce = nn.Conv2d(c, c, 1)
        self.norm = nn.LayerNorm(c)
        self.embed = nn.Linear(c, spec.embed_dim)
        self.classifier = nn.Linear(spec.embed_dim, spec.num_classes)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, c = tokens.shape
        h, w = self.grid
        patches = tokens[:, self.prefix:]
        # the 1x1 expand is a matmul on the tokens as they come ([B, N, C]): the same
        # function as the conv on the grid, but the runtime needs no transpose and layout
        # reorder before it (OpenVINO, vit_tiny_c10's head: 240 -> 190 us per call); only
        # the depthwise 3x3 sees the grid
        expanded = F.gelu(F.linear(patches, self.expand.weight.flatten(1), self.expand.bias))
        mixed = F.gelu(self.depthwise(expanded.transpose(1, 2).reshape(b, c, h, w)))
        # mean(grid + reduce(mixed)) = mean(grid) + reduce(mean(mixed)): the 1x1 conv is
        # affine, so it runs once on the pooled vector instead of on every cell (the same
        # function, a third of the head's multiply-adds)
        pooled = patches.mean(1) + F.linear(mixed.mean((2, 3)), self.reduce.weight.flatten(1), self.reduce.bias)
        embedding = F.gelu(self.embed(self.norm(pooled)))
        return self.classifier(embedding), embedding


class GlobalAggregationHead(nn.Module):
    def __init__(self, spec: HeadSpec, heads: int = 4):
        super().__init__()
        c = spec.dim
        self.heads = heads if c % heads == 0 else 1
        self.prefix, self.grid, self.pool = spec.prefix, spec.grid, spec.pool
        self.norm_in = nn.LayerNorm(c)
        self.q = nn.Linear(c, c)
        self.kv = nn.Linear(c, 2 * c)
        self.proj = nn.Linear(c, c)
        self.norm = nn.LayerNorm(c)
        self.embed = nn.Linear(c, spec.embed_dim)
        self.classifier = nn.Linear(spec.embed_dim, spec.num_classes)

    def _summary(self, x: torch.Tensor) -> torch.Tensor:
        """Keys/values: the patch grid average-pooled to pool x pool (plus prefix tokens);
        without a grid (after token reduction) all tokens, which are few by then."""
        if self.grid is None:
            return x
        b, _, c = x.shape
        h, w = self.grid
        patches = x[:, self.prefix:].transpose(1, 2).reshape(b, c, h, w)
        pooled = F.adaptive_avg_pool2d(patches, (min(self.pool, h), min(self.pool, w))).flatten(2).transpose(1, 2)
        return torch.cat([x[:, :self.prefix], pooled], dim=1)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean_n(tokens + proj(attn_n @ v)) = mean(tokens) + proj(mean_n(attn_n) @ v): the
        head only needs each token's attention weights over the few pooled keys, averaged.
        With m keys per head, q_n . k = x_n . (W_q^T k) + b_q . k, so the scores come from
        x times a C x (heads * m) matrix built per image instead of the C x C query
        projection; the same function as attention followed by the mean, a fraction of its
        multiply-adds on a 65-token or 3136-token grid (the exit's cost decides whether it
        pays). Many keys (no grid after token reduction): the query projection as usual."""
        x = self.norm_in(tokens)
        b, n, c = x.shape
        kv = self._summary(x)
        m, d = kv.shape[1], c // self.heads
        k, v = self.kv(kv).reshape(b, m, 2, self.heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # [b, heads, m, d]
        k = k * d ** -0.5  # the attention scale, folded into the keys
        if m * self.heads < c:
            wq = self.q.weight.reshape(self.heads, d, c).transpose(1, 2)  # [heads, C, d]
            folded = (wq @ k.transpose(-1, -2)).permute(0, 2, 1, 3).reshape(b, c, self.heads * m)
            bias = (k @ self.q.bias.reshape(self.heads, d, 1)).reshape(b, 1, self.heads * m)
            scores = (x @ folded + bias).reshape(b, n, self.heads, m).transpose(1, 2)  # [b, heads, n, m]
        else:
            scores = self.q(x).reshape(b, n, self.heads, d).transpose(1, 2) @ k.transpose(-1, -2)
        weights = scores.softmax(-1).mean(2, keepdim=True)  # [b, heads, 1, m]
        attended = (weights @ v).reshape(b, c)  # heads then channels, as the concatenated heads
        embedding = F.gelu(self.embed(self.norm(tokens.mean(1) + self.proj(attended))))
        return self.classifier(embedding), embedding


class LinearHead(nn.Module):
    def __init__(self, spec: HeadSpec):
        super().__init__()
        self.norm = nn.LayerNorm(spec.dim)
        self.classifier = nn.Linear(spec.dim, spec.num_classes)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.classifier(self.norm(tokens).mean(1)), None


HEADS = {"local": LocalPerceptionHead, "global": GlobalAggregationHead, "linear": LinearHead}


def build_head(spec: HeadSpec) -> nn.Module:
    return HEADS[spec.kind](spec)
