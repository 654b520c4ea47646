"""Pure tensor functions for token reduction (EViT reorganisation, ToMe merging).

Written from the papers. Every shape here is fixed by (tokens in, tokens kept), never by
data, so graphs export with static token counts. The merge has two export forms:
``scatter`` (scatter_reduce, ONNX Runtime / OpenVINO) and ``onehot`` (a MatMul with a
one-hot matrix; TensorRT < 10 has no ScatterElements with reduction).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def evit_reorganize(x: torch.Tensor, cls_attn: torch.Tensor, prefix: int, keep: int, fuse: bool) -> torch.Tensor:
    """Keep the ``keep`` patch tokens with the highest class-token attention; optionally
    fuse the rest into one token weighted by that attention (not renormalised).

    x: [B, N, C] with ``prefix`` leading tokens that are always kept; cls_attn: [B, N - prefix].
    """
    patches = x[:, prefix:]
    order = cls_attn.argsort(dim=1, descending=True)
    kept_idx, dropped_idx = order[:, :keep], order[:, keep:]
    c = x.shape[-1]
    kept = patches.gather(1, kept_idx.unsqueeze(-1).expand(-1, -1, c))
    parts = [x[:, :prefix], kept]
    if fuse and dropped_idx.shape[1] > 0:
        dropped = patches.gather(1, dropped_idx.unsqueeze(-1).expand(-1, -1, c))
        weights = cls_attn.gather(1, dropped_idx).unsqueeze(-1)
        parts.append((dropped * weights).sum(dim=1, keepdim=True))
    return torch.cat(parts, dim=1)


def bipartite_matching(metric: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ToMe's bipartite soft matching on the [B, N, D] metric of the *patch* tokens
    (prefix tokens are split off by the caller and never merge).

    Tokens alternate into sets A (even) and B (odd); each A token picks its most similar B
    token (cosine); the r best-matching A tokens are merged into their partners.
    Returns (unmerged A indices [B, Na - r], merged A indices [B, r], their B partners [B, r])."""
    metric = F.normalize(metric, dim=-1)
    scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)
    best, partner = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    merged, unmerged = order[:, :r], order[:, r:].sort(dim=-1).values
    return unmerged, merged, partner.gather(1, merged)


def merge_tokens(x: torch.Tensor, size: torch.Tensor, unmerged: torch.Tensor, merged: torch.Tensor,
                 partner: torch.Tensor, form: str = "scatter") -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average of each merged A token into its B partner.

    x: [B, N, C] patch tokens, size: [B, N, 1] (patches each token stands for). Output:
    the unmerged A tokens, then all B tokens (N - r tokens), and their sizes."""
    c = x.shape[-1]
    xs = x * size
    a, b = xs[:, ::2], xs[:, 1::2]
    sa, sb = size[:, ::2], size[:, 1::2]
    keep_a = a.gather(1, unmerged.unsqueeze(-1).expand(-1, -1, c))
    keep_sa = sa.gather(1, unmerged.unsqueeze(-1))
    src = a.gather(1, merged.unsqueeze(-1).expand(-1, -1, c))
    src_s = sa.gather(1, merged.unsqueeze(-1))
    if form == "onehot":
        onehot = F.one_hot(partner, num_classes=b.shape[1]).to(x.dtype).transpose(1, 2)  # [B, Nb, r]
        b = b + onehot @ src
        sb = sb + onehot @ src_s
    elif form == "scatter":
        b = b.scatter_reduce(1, partner.unsqueeze(-1).expand(-1, -1, c), src, reduce="sum")
        sb = sb.scatter_reduce(1, partner.unsqueeze(-1), src_s, reduce="sum")
    else:
        raise ValueError(f"unknown merge form {form!r} (scatter | onehot)")
    new_size = torch.cat([keep_sa, sb], dim=1)
    return torch.cat([keep_a, b], dim=1) / new_size, new_size
