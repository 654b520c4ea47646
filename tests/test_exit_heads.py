"""The exit heads' cheap forwards (the affine layers moved after the mean, the query
projection folded into the few pooled keys) compute the same function as the LGViT heads
written plainly: attention / convolution over every token, then the mean."""
import pytest
import torch
import torch.nn.functional as F

from edgevit.exit_heads import GlobalAggregationHead, HeadSpec, LocalPerceptionHead


def _spec(kind, grid=(8, 8), prefix=1, dim=48):
    return HeadSpec(kind=kind, block=0, dim=dim, grid=grid, prefix=prefix, embed_dim=64, num_classes=10,
                    tokens=prefix + (grid[0] * grid[1] if grid else 20))


def _plain_global(head, tokens):
    x = head.norm_in(tokens)
    b, n, c = x.shape
    kv = head._summary(x)
    q = head.q(x).reshape(b, n, head.heads, c // head.heads).transpose(1, 2)
    k, v = head.kv(kv).reshape(b, kv.shape[1], 2, head.heads, c // head.heads).permute(2, 0, 3, 1, 4).unbind(0)
    attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
    embedding = F.gelu(head.embed(head.norm((tokens + head.proj(attended)).mean(1))))
    return head.classifier(embedding), embedding


def _plain_local(head, tokens):
    b, _, c = tokens.shape
    grid = tokens[:, head.prefix:].transpose(1, 2).reshape(b, c, *head.grid)
    grid = grid + head.reduce(F.gelu(head.depthwise(F.gelu(head.expand(grid)))))
    embedding = F.gelu(head.embed(head.norm(grid.mean((2, 3)))))
    return head.classifier(embedding), embedding


def _randomise(head):
    torch.manual_seed(1)
    for p in head.parameters():  # biases too: a dropped bias term must show
        p.data.normal_(0, 0.3)
    return head.eval()


@pytest.mark.parametrize("grid, prefix", [((8, 8), 1), ((7, 7), 0), (None, 2)])  # None: every token a key (the plain path)
def test_global_head_equals_attention_then_mean(grid, prefix):
    head = _randomise(GlobalAggregationHead(_spec("global", grid, prefix)))
    tokens = torch.randn(3, prefix + (grid[0] * grid[1] if grid else 20), 48)
    with torch.no_grad():
        for got, want in zip(head(tokens), _plain_global(head, tokens)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("grid, prefix", [((6, 6), 1), ((4, 7), 0)])  # non-square: rows and columns kept apart
def test_local_head_equals_convolution_then_mean(grid, prefix):
    head = _randomise(LocalPerceptionHead(_spec("local", grid, prefix)))
    tokens = torch.randn(3, prefix + grid[0] * grid[1], 48)
    with torch.no_grad():
        for got, want in zip(head(tokens), _plain_local(head, tokens)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_local_head_exports_its_expand_as_a_matmul_on_the_tokens(tmp_path):
    """Only the depthwise 3x3 is a convolution in the exported head: the 1x1 expand runs on
    the [B, N, C] tokens, so the runtime reorders no grid layout before it."""
    import onnx

    from edgevit.exporters.onnx import export_module

    head = _randomise(LocalPerceptionHead(_spec("local", (6, 6), 1)))
    path = tmp_path / "head.onnx"
    export_module(head, (torch.randn(2, 37, 48),), ["tokens"], ["logits", "embedding"], path, 18)
    nodes = onnx.load(str(path)).graph.node
    ops = [n.op_type for n in nodes]
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert len(convs) == 1 and next(a.i for a in convs[0].attribute if a.name == "group") == 48, ops
    assert ops.index("Conv") > min(ops.index(m) for m in ("MatMul", "Gemm") if m in ops), ops
