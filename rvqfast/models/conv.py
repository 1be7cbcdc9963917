"""1-D convolutional encoder/decoder of the motion tokenizer (T2M-GPT / MoMask family layout).

Both work on channels-first sequences ``(B, C, T)``. The encoder halves the time axis ``down_t``
times with stride-2 convolutions; the decoder mirrors it with nearest-neighbour upsampling.
Every op (Conv1d, ReLU, nearest Upsample, add) exports to ONNX opset 15.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class ResBlock1d(nn.Module):
    """``x + Conv1x1(ReLU(Conv3_dilated(ReLU(x))))``: keeps length and width."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.proj = nn.Conv1d(width, width, 1)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj(self.act(self.conv(self.act(x))))


def _res_stack(width: int, dilations: Sequence[int]) -> nn.Sequential:
    return nn.Sequential(*[ResBlock1d(width, d) for d in dilations])


class MotionEncoder(nn.Module):
    """(B, in_dim, T) -> (B, code_dim, T / 2**down_t)."""

    def __init__(self, in_dim: int, width: int, code_dim: int, down_t: int, dilations: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(in_dim, width, 3, padding=1), nn.ReLU()]
        for _ in range(down_t):
            # kernel 4 / stride 2 / pad 1 halves even lengths exactly.
            layers += [nn.Conv1d(width, width, 4, stride=2, padding=1), _res_stack(width, dilations)]
        layers.append(nn.Conv1d(width, code_dim, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MotionDecoder(nn.Module):
    """(B, code_dim, N) -> (B, out_dim, N * 2**down_t); mirror of :class:`MotionEncoder`."""

    def __init__(self, out_dim: int, width: int, code_dim: int, down_t: int, dilations: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(code_dim, width, 3, padding=1), nn.ReLU()]
        for _ in range(down_t):
            layers += [
                _res_stack(width, dilations),
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                nn.Conv1d(width, width, 3, padding=1),
            ]
        layers += [nn.Conv1d(width, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, out_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


__all__ = ["ResBlock1d", "MotionEncoder", "MotionDecoder"]
