"""ResNet stem and blocks whose activations follow the norm.

Detectron2 hard-codes `F.relu_` in BasicStem, BasicBlock and BottleneckBlock. These
subclasses keep the parent's layers (same state_dict keys, same init) and only choose
the activation (`NormFactory.activation`): none after a norm+activation layer (FRN+TLU,
EvoNorm: the layer is the activation), a TLU for "X+TLU", ReLU otherwise. Norms whose
output goes into the residual add (last conv, shortcut) have no activation after them:
FRN there has no TLU, EvoNorm is its linear (affine) variant. After the add, "X+TLU"
models (FRN included) use a TLU (MODEL.FRN.RESIDUAL_ACTIVATION="ReLU" makes it a ReLU),
the others a ReLU. With "GNWS" every conv of the ResNet is weight-standardized (MABN:
centralized, WN: weight-normalized; CBN is linked to each conv).
"""
import torch.nn.functional as F
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet

from ..config.keys import check_norm_config, norm_options_from_config
from ..layers.factory import NormFactory, activation_after, resolve_norm

__all__ = [
    "NormActStem",
    "NormActBasicBlock",
    "NormActBottleneckBlock",
    "BLOCKS_PER_STAGE",
    "check_resnet_args",
    "make_norm_act_stages",
    "standardize_for",
    "build_frn_resnet_backbone",
]


class NormActStem(BasicStem):
    def __init__(self, in_channels=3, out_channels=64, norm="BN"):
        super().__init__(in_channels, out_channels, norm)
        self.act = activation_after(norm, out_channels)

    def forward(self, x):
        x = self.act(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _drop_activation_before_add(block, norm, last_conv):
    """Re-create the norms that feed the residual add without their activation (FRN's TLU,
    EvoNorm's nonlinearity)."""
    if isinstance(norm, NormFactory) and norm.without_activation() is not norm:
        plain = norm.without_activation()
        for conv in (last_conv, block.shortcut):
            if conv is not None:
                conv.norm = plain(conv.out_channels)


def _residual_activation(norm, channels):
    if isinstance(norm, NormFactory):
        return norm.residual_activation(channels)
    return activation_after("", channels)  # ReLU


class NormActBasicBlock(BasicBlock):
    def __init__(self, in_channels, out_channels, *, stride=1, norm="BN"):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm)
        _drop_activation_before_add(self, norm, self.conv2)
        self.act1 = activation_after(norm, out_channels)
        self.out_act = _residual_activation(norm, out_channels)

    def forward(self, x):
        out = self.act1(self.conv1(x))
        out = self.conv2(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return self.out_act(out + shortcut)


class NormActBottleneckBlock(BottleneckBlock):
    def __init__(self, in_channels, out_channels, *, bottleneck_channels, norm="BN", **kwargs):
        super().__init__(in_channels, out_channels, bottleneck_channels=bottleneck_channels, norm=norm, **kwargs)
        _drop_activation_before_add(self, norm, self.conv3)
        self.act1 = activation_after(norm, bottleneck_channels)
        self.act2 = activation_after(norm, bottleneck_channels)
        self.out_act = _residual_activation(norm, out_channels)

    def forward(self, x):
        out = self.act1(self.conv1(x))
        out = self.act2(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return self.out_act(out + shortcut)


BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
# Config keys named in the errors of make_norm_act_stages (yacs names; the LazyConfig
# builders in lazy.py pass theirs).
YACS_RESNET_KEYS = {
    "depth": "MODEL.RESNETS.DEPTH",
    "res5_dilation": "MODEL.RESNETS.RES5_DILATION",
    "num_groups": "MODEL.RESNETS.NUM_GROUPS",
}


def check_resnet_args(depth, num_groups=1, res5_dilation=1, keys=None) -> None:
    """Raise ValueError naming the config key for a depth / dilation / groups frn-det cannot build."""
    keys = {**YACS_RESNET_KEYS, **(keys or {})}
    if res5_dilation not in (1, 2):
        raise ValueError(f"{keys['res5_dilation']} must be 1 or 2, got {res5_dilation}")
    if depth not in BLOCKS_PER_STAGE:
        raise ValueError(f"{keys['depth']}={depth} is not one of {sorted(BLOCKS_PER_STAGE)}")
    if depth in (18, 34) and (res5_dilation != 1 or num_groups != 1):
        raise ValueError(f"R18/R34 need {keys['res5_dilation']}=1 and {keys['num_groups']}=1")


def make_norm_act_stages(depth, norm, *, in_channels, out_channels, num_groups=1, width_per_group=64,
                         stride_in_1x1=False, res5_dilation=1, keys=None):
    """The four ResNet stages (lists of blocks) of build_frn_resnet_backbone, with the
    norm-aware blocks. `norm`: a resolved norm ("" / NormFactory / callable); in_channels:
    the stem's output channels; out_channels: res2's. `keys` names the config keys in
    errors (default: the yacs MODEL.RESNETS.* names). Weight Standardization (GNWS) is not
    applied here: see standardize_for(norm, ...)."""
    check_resnet_args(depth, num_groups, res5_dilation, keys)
    basic = depth in (18, 34)
    bottleneck_channels = num_groups * width_per_group
    stages = []
    for idx, num_blocks in enumerate(BLOCKS_PER_STAGE[depth]):
        dilation = res5_dilation if idx == 3 else 1
        first_stride = 1 if idx == 0 or dilation == 2 else 2
        kwargs = dict(
            num_blocks=num_blocks,
            stride_per_block=[first_stride] + [1] * (num_blocks - 1),
            in_channels=in_channels,
            out_channels=out_channels,
            norm=norm,
        )
        if basic:
            kwargs["block_class"] = NormActBasicBlock
        else:
            kwargs.update(
                block_class=NormActBottleneckBlock,
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=stride_in_1x1,
                dilation=dilation,
                num_groups=num_groups,
            )
        stages.append(ResNet.make_stage(**kwargs))
        in_channels, out_channels, bottleneck_channels = out_channels, out_channels * 2, bottleneck_channels * 2
    return stages


def standardize_for(norm, modules) -> None:
    """Adapt the normalized convs of `modules` when the norm asks for it (GNWS, MABN, WN, CBN:
    NormFactory.adapt); before ResNet() freezes anything (FrozenBN conversion keeps the conv
    modules)."""
    if isinstance(norm, NormFactory):
        norm.adapt(modules)


@BACKBONE_REGISTRY.register()
def build_frn_resnet_backbone(cfg, input_shape):
    """Detectron2's build_resnet_backbone with norm-aware stem and blocks.

    With a stock Detectron2 norm the result has exactly the stock ResNet's parameters and
    buffers. Unlike the stock builder it allows narrow R18/R34 (RES2_OUT_CHANNELS != 64)
    for CPU-sized models. Deformable convs need Detectron2's compiled ops: not supported.
    """
    check_norm_config(cfg)  # all three norm keys, before anything is built
    r = cfg.MODEL.RESNETS
    options = norm_options_from_config(cfg)
    norm = resolve_norm(r.NORM, key="MODEL.RESNETS.NORM", options=options)
    if any(r.DEFORM_ON_PER_STAGE):
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE is not supported by build_frn_resnet_backbone "
            f"(got {list(r.DEFORM_ON_PER_STAGE)}); use Detectron2's build_resnet_backbone"
        )
    check_resnet_args(r.DEPTH, r.NUM_GROUPS, r.RES5_DILATION)
    stem = NormActStem(input_shape.channels, r.STEM_OUT_CHANNELS, norm=norm)  # (stem first: same init order)
    stages = make_norm_act_stages(
        r.DEPTH, norm, in_channels=r.STEM_OUT_CHANNELS, out_channels=r.RES2_OUT_CHANNELS, num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP, stride_in_1x1=r.STRIDE_IN_1X1, res5_dilation=r.RES5_DILATION,
    )
    standardize_for(norm, [stem] + [block for stage in stages for block in stage])
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
