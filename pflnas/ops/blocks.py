"""Fixed (non-searchable) blocks shared by supernets and derived networks."""

from __future__ import annotations

from torch import Tensor, nn

from pflnas.ops.primitives import ReLUConvBN


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's residual reduction block (``ResNetBasicblock``): two ReLU-Conv-BN 3x3 and a
    shortcut of 2x2 avg-pool + 1x1 conv at stride 2."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1, affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine)
        self.downsample: nn.Module | None
        if stride == 2:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=2, padding=0), nn.Conv2d(c_in, c_out, 1, bias=False)
            )
        elif c_in != c_out:
            self.downsample = ReLUConvBN(c_in, c_out, 1, 1, 0, affine)
        else:
            self.downsample = None

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return residual + self.conv_b(self.conv_a(x))
