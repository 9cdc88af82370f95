# A CPU-sized RetinaNet (narrow R18, 64-channel FPN, 2-conv head, 160 px images) that
# learns the built-in synthetic shapes dataset in minutes on 2 cores: the LazyConfig twin
# of configs/tiny_retinanet_cpu.yaml (same model, data, optimizer and schedule). FRN
# everywhere; pick another norm with e.g.
#   python tools/lazyconfig_train_net.py --config-file configs/lazy/tiny_retinanet_cpu.py \
#       model.backbone.bottom_up.stages.norm=GN
from detectron2.layers import ShapeSpec

from .common.data.shapes import dataloader
from .common.models.retinanet_frn import model
from .common.optim import SGD as optimizer
from .common.schedule import multistep_with_warmup
from .common.train import train

model.backbone.bottom_up.stages.norm = "FRN"  # the stem, FPN and head follow it

# narrow R18: 32-channel stem and res2 (res5: 256 channels)
model.backbone.bottom_up.stem.out_channels = 32
model.backbone.bottom_up.stages.depth = 18
model.backbone.bottom_up.stages.out_channels = 32
model.backbone.top_block.in_channels = 256
# 64-channel FPN, 2-conv head, 4 classes
model.backbone.out_channels = 64
model.head.input_shape = [ShapeSpec(channels=64)] * 5
model.head.conv_dims = [64, 64]
model.num_classes = 4
model.test_topk_candidates = 300
model.anchor_generator.sizes = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [16, 32, 64, 128, 256]]

optimizer.lr = 0.02
optimizer.weight_decay = 1e-4
lr_multiplier = multistep_with_warmup(max_iter=300, steps=(220, 280), warmup_iters=50)

train.max_iter = 300
train.checkpointer.period = 100
train.device = "cpu"
train.output_dir = "./output/lazy/tiny_retinanet_cpu"
