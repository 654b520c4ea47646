"""Pure tensor functions for merge -> compute -> unmerge on a token grid (Swin's MLP).

Written from ToMe for Stable Diffusion (arXiv 2303.17604) and ToMe (arXiv 2210.09461):
the grid is cut into stride x stride cells; the first token of each cell is its
destination, the other tokens are sources. Each source is scored by cosine similarity to
its own cell's destination (local matching: an image's redundancy is between neighbours,
and it costs N x C instead of the N_src x N_dst x C of a global bipartite match, which on
Swin's 56 x 56 stage-1 grid would cost as much as the MLP it saves); the ``r`` most
similar sources are averaged into their destination, the token-wise function runs on the
N - r tokens left, and every merged source gets its destination's output back. The grid
therefore survives intact for window partition, the shift and patch merging.

Shapes depend only on (grid, stride, r), never on data. The merge is dense (a mask times
the cell) and the unmerge a Gather of whole rows with a computed index, so the graph has no
ScatterElements at all: one form exports to ONNX Runtime, OpenVINO and TensorRT alike.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def cell_split(x: torch.Tensor, h: int, w: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, h*w, C] row-major grid -> destinations [B, M, C] and sources [B, M, s*s-1, C],
    M = (h/s)(w/s) cells."""
    b, _, c = x.shape
    cells = x.reshape(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, (h // s) * (w // s), s * s, c)
    return cells[:, :, 0], cells[:, :, 1:]


def cell_join(dst: torch.Tensor, src: torch.Tensor, h: int, w: int, s: int) -> torch.Tensor:
    """Inverse of ``cell_split``."""
    b, _, _, c = src.shape
    cells = torch.cat([dst.unsqueeze(2), src], dim=2)
    return cells.reshape(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h * w, c)


def take_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t [B, N, C], index [B, R] -> [B, R, C]: row index[b, i] of t[b]. One Gather of whole
    rows on the flattened batch, where ``t.gather(1, index[..., None].expand(...))`` exports
    as GatherElements over an index broadcast to every channel: on Swin-T 224 in OpenVINO
    that form's GatherElements + Broadcast cost 12 ms per image, more than the MLP saved."""
    b, n, c = t.shape
    flat = (index + torch.arange(b, device=t.device).unsqueeze(1) * n).reshape(-1)
    return t.reshape(-1, c).index_select(0, flat).reshape(b, index.shape[1], c)


def max_merge(h: int, w: int, s: int) -> int:
    """Sources there are to merge (every token but one per cell)."""
    return (h // s) * (w // s) * (s * s - 1)


def merge_compute_unmerge(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], h: int, w: int, s: int,
                          r: int, match: str = "cell") -> torch.Tensor:
    """``fn`` (token-wise, e.g. an MLP) applied to x [B, h*w, C] as if to every token, computed
    on h*w - r tokens. r == 0 calls ``fn(x)`` itself (bit-identical to not merging).

    match: "cell" scores each source against its own cell's destination only (dense, N x C);
    "grid" lets it pick the most similar destination of the whole grid (ToMe-SD's match, a
    [N_src, M] similarity and a one-hot MatMul: affordable on the small late-stage grids)."""
    if r == 0:
        return fn(x)
    b, n, c = x.shape
    if n != h * w or h % s or w % s or not 0 < r <= max_merge(h, w, s):
        raise ValueError(f"grid merge: {n} tokens, grid {h}x{w}, stride {s}, r {r} do not fit")
    dst, src = cell_split(x, h, w, s)
    m, k = src.shape[1], src.shape[2]
    if match == "cell":
        sim = (F.normalize(src, dim=-1) * F.normalize(dst, dim=-1).unsqueeze(2)).sum(-1).flatten(1)  # [B, M*k]
        partner = torch.arange(m, device=x.device).repeat_interleave(k).expand(b, -1)  # a constant in the graph
    elif match == "grid":
        sim, partner = (F.normalize(src.flatten(1, 2), dim=-1) @ F.normalize(dst, dim=-1).transpose(1, 2)).max(-1)
    else:
        raise ValueError(f"unknown grid merge match {match!r} (cell | grid)")
    order = sim.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)  # rank of each source; the r first are merged
    merged = rank < r
    if match == "cell":
        weight = merged.to(x.dtype).view(b, m, k, 1)
        dst_in = (dst + (src * weight).sum(2)) / (1 + weight.sum(2))  # plain mean: every block unmerges, no sizes to carry
    else:  # one-hot MatMul instead of a scatter-add: the graph stays free of ScatterElements
        onehot = F.one_hot(partner, m).to(x.dtype) * merged.unsqueeze(-1).to(x.dtype)  # [B, M*k, M]
        dst_in = (dst + onehot.transpose(1, 2) @ src.flatten(1, 2)) / (1 + onehot.sum(1).unsqueeze(-1))
    kept = take_rows(src.flatten(1, 2), order[:, r:])
    y = fn(torch.cat([dst_in, kept], dim=1))  # [B, M + M*k - r, C']
    index = torch.where(merged, partner, m + rank - r)  # merged: its destination's row; kept: its row after the M
    y_src = take_rows(y, index).view(b, m, k, -1)
    return cell_join(y[:, :m], y_src, h, w, s)
