"""Winograd F(2x2, 3x3) convolution for CPU inference (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", CVPR 2016).

A 3x3 stride-1 convolution computes each 2x2 block of outputs from a 4x4 tile of inputs with
4 x 4 = 16 products per (input, output) channel pair instead of 2 x 2 x 9 = 36:

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (per tile, * = elementwise over the 4x4 grid)

with g the 3x3 filter and d the 4x4 input tile. Summed over the input channels, the 16 grid
positions become 16 independent matrix products (tiles x C_in) @ (C_in x C_out), which is where
the time goes; the transforms are additions. On the CPUs we ship to, oneDNN runs these 3x3
layers as direct convolutions, so the products are 2.25x fewer here. A dilated convolution
(dilation d, padding d) is the same algorithm on tiles whose points are d apart, so the
dilated ResNet stages (output stride 8) take it too.

Everything is channels-last: tiles are vectors over channels, the products are plain batched
GEMMs, and the output comes back in the channels-last layout the inference model uses. Tile rows
are processed in chunks so that the transformed input and products stay small (a few MB),
whatever the image size: the peak memory is the direct convolution's plus a few chunks.

The result equals the direct convolution up to float rounding (the F(2x2, 3x3) transforms use
only 0, +-1 and +-1/2; measured max error below the direct convolution's own against float64).
"""

from __future__ import annotations

import torch
from torch import nn

# bytes of transformed input (16 x columns x channels floats) per chunk of tile rows: bounds the
# extra memory whatever the image size and keeps a chunk's working set near the caches. 8 MB:
# the authors' R101 UperNet at 512x512 peaks ~90 MB lower than with 16 MB chunks, no slower
CHUNK_BYTES = 8 << 20
# convolutions narrower than this stay direct: the GEMMs are too thin to pay for the transforms
MIN_CHANNELS = 64


def _filter_rows(g0, g1, g2, out) -> None:
    """G applied along one axis: rows (g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2)."""
    out[0].copy_(g0)
    torch.add(g0, g2, out=out[1])
    torch.sub(out[1], g1, out=out[2])
    out[1].add_(g1).mul_(0.5)
    out[2].mul_(0.5)
    out[3].copy_(g2)


def transform_filter(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) filters -> (16, C, K): G g G^T for each (output, input) channel pair.

    Computed in the (grid, K, C) layout, which reads channels-last weights contiguously; the
    result is its transposed view (the batched product takes it as is).
    """
    k, c = weight.shape[:2]
    g = weight.permute(2, 3, 0, 1)  # (3, 3, K, C)
    rows = weight.new_empty(4, 3, k, c)
    _filter_rows(g[0], g[1], g[2], rows)
    u = weight.new_empty(4, 4, k, c)
    for i in range(4):
        _filter_rows(rows[i, 0], rows[i, 1], rows[i, 2], u[i])
    return u.view(16, k, c).transpose(1, 2)


def _input_transform(d0, d1, d2, d3, out) -> None:
    """B^T applied along one axis: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3)."""
    torch.sub(d0, d2, out=out[0])
    torch.add(d1, d2, out=out[1])
    torch.sub(d2, d1, out=out[2])
    torch.sub(d1, d3, out=out[3])


def _output_transform(m0, m1, m2, m3, y0, y1) -> None:
    """A^T applied along one axis: y0 = m0 + m1 + m2, y1 = m1 - m2 - m3."""
    torch.add(m0, m1, out=y0)
    y0.add_(m2)
    torch.sub(m1, m2, out=y1)
    y1.sub_(m3)


def _shifted(t: torch.Tensor, size, stride, shift: int) -> torch.Tensor:
    return t.as_strided(size, stride, t.storage_offset() + shift)


def winograd_conv3x3(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: int = 1,
    chunk_bytes: int = CHUNK_BYTES,
    filters: torch.Tensor | None = None,
) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, stride=1, padding=dilation, dilation=dilation)` by F(2x2, 3x3).

    Args:
        x: (N, C, H, W) float input, any memory layout (read chunk by chunk, never copied whole).
        weight: (K, C, 3, 3) filters.
        bias: (K,) or None.
        dilation: the convolution's dilation (= its zero padding, a "same" convolution).
        chunk_bytes: size of a chunk's transformed input, or its products if larger.
        filters: `transform_filter(weight)`, when the caller caches it.
    Returns:
        (N, K, H, W) output in the channels-last layout.
    """
    n, c, h, w = x.shape
    k = weight.shape[0]
    d = dilation
    if weight.shape[1:] != (c, 3, 3):
        raise ValueError(
            f"winograd_conv3x3: weight {tuple(weight.shape)} for input {tuple(x.shape)}"
        )
    u = transform_filter(weight) if filters is None else filters
    # tile grid: output rows 2d*a + d*b + r (a: tile row, b: row in the tile, r: residue mod d)
    th, tw = -(-h // (2 * d)), -(-w // (2 * d))
    hq, wq = th * 2 * d, tw * 2 * d
    y = x.new_empty(n, hq, wq, k)
    yn, yh, yw, yc = y.stride()
    columns = chunk_bytes // (16 * x.element_size() * max(c, k))
    rows_per_chunk = max(1, columns // (n * d * tw * d))
    # one zero-padded chunk of input rows at a time (the padded input is never built whole):
    # padded row p is input row p - d; columns outside [d, d + w) stay zero
    xh = x.permute(0, 2, 3, 1)
    buf = x.new_zeros(n, 2 * d * rows_per_chunk + 2 * d, wq + 2 * d, c)
    sn, sh, sw, sc = buf.stride()
    for a0 in range(0, th, rows_per_chunk):
        na = min(rows_per_chunk, th - a0)
        top = 2 * d * a0 - d  # input row of the chunk's first padded row
        base = buf[:, : 2 * d * na + 2 * d]
        first, last = max(top, 0), min(top + base.shape[1], h)
        base[:, : first - top].zero_()
        base[:, first - top : last - top, d : d + w] = xh[:, first:last]
        base[:, last - top :].zero_()
        # the four input rows of every tile row, each (N, na, d, Wp, C)
        row_size = (n, na, d, wq + 2 * d, c)
        row_stride = (sn, 2 * d * sh, sh, sw, sc)
        rows = [_shifted(base, row_size, row_stride, j * d * sh) for j in range(4)]
        r = x.new_empty(4, *row_size)
        _input_transform(*rows, r)
        # then along the columns: V (4, 4, N, na, d, tw, d, C) = 16 grid positions x tiles x C
        cols = n * na * d * tw * d
        v = x.new_empty(4, 4, n, na, d, tw, d, c)
        for i in range(4):
            ri = r[i]
            q0, q1, q2, q3, q4 = ri.stride()
            col_size = (n, na, d, tw, d, c)
            col_stride = (q0, q1, q2, 2 * d * q3, q3, q4)
            parts = [_shifted(ri, col_size, col_stride, j * d * q3) for j in range(4)]
            _input_transform(*parts, v[i])
        m = torch.bmm(v.view(16, cols, c), u).view(4, 4, n, na, d, tw, d, k)
        o = x.new_empty(2, 4, n, na, d, tw, d, k)
        _output_transform(m[0], m[1], m[2], m[3], o[0], o[1])
        chunk = y[:, 2 * d * a0 : 2 * d * (a0 + na)]
        # (N, na, b_h, r_h, tw, b_w, r_w, K) view of this chunk's output rows
        out = _shifted(
            chunk,
            (n, na, 2, d, tw, 2, d, k),
            (yn, 2 * d * yh, d * yh, yh, 2 * d * yw, d * yw, yw, yc),
            0,
        )
        for b in range(2):
            ob = o[b]
            _output_transform(
                ob[0], ob[1], ob[2], ob[3], out[:, :, b, :, :, 0], out[:, :, b, :, :, 1]
            )
        if bias is not None:
            chunk.add_(bias)
    if hq != h or wq != w:
        y = y[:, :h, :w].contiguous()
    return y.permute(0, 3, 1, 2)


# the padded input may be at most this many times the input's area: a large dilation on a small
# map (ASPP's 24 and 36 at 64x64) would mostly transform zeros, and the direct conv wins there
MAX_PADDED_AREA = 2.5


def _runs_winograd(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> bool:
    """Inference on a CPU in float32, outside tracing, export and compilation, on a map that
    is large against the dilation."""
    if not (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() == 4
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not torch.onnx.is_in_onnx_export()
    ):
        return False
    if weight.shape[1] != x.shape[1]:  # let the direct conv raise its error
        return False
    h, w = x.shape[-2:]
    step = 2 * dilation
    padded = (-(-h // step) * step + step) * (-(-w // step) * step + step)
    return padded <= MAX_PADDED_AREA * h * w


class WinogradConv2d(nn.Conv2d):
    """A 3x3, stride-1, "same" `nn.Conv2d` that runs by F(2x2, 3x3) in CPU inference.

    Same parameters and state-dict keys as the `nn.Conv2d` it replaces (`use_winograd` swaps the
    class of an existing module); training, gradients, GPUs, other dtypes, tracing, ONNX export
    and `torch.compile` take the ordinary convolution. Code that convolves with a slice of the
    module's weight calls `conv._conv_forward(x, weight, bias)` (as `nn.Conv2d.forward` does)
    and takes the same path.
    """

    def _conv_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if _runs_winograd(x, weight, self.dilation[0]):
            return winograd_conv3x3(x, weight, bias, self.dilation[0])
        return super()._conv_forward(x, weight, bias)


def winograd_eligible(conv: nn.Module, min_channels: int = MIN_CHANNELS) -> bool:
    """A plain 3x3 stride-1 conv whose zero padding equals its dilation, wide enough to pay."""
    if type(conv) is not nn.Conv2d:
        return False
    dil = conv.dilation
    return (
        conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.groups == 1
        and dil[0] == dil[1]
        and conv.padding == dil
        and conv.padding_mode == "zeros"
        and min(conv.in_channels, conv.out_channels) >= min_channels
    )


def use_winograd(model: nn.Module, min_channels: int = MIN_CHANNELS) -> int:
    """Make every eligible conv of `model` a `WinogradConv2d` (in place); returns how many."""
    count = 0
    for module in model.modules():
        if winograd_eligible(module, min_channels):
            module.__class__ = WinogradConv2d
            count += 1
    return count
