# A CPU-sized Mask R-CNN (narrow R18, 64-channel FPN, 4conv1fc box head of 64 channels, 4-conv
# mask head of 64 channels, 160 px images) that learns the built-in synthetic shapes dataset
# (boxes and their polygons) in minutes on 2 cores: the LazyConfig twin of
# configs/tiny_mask_rcnn_cpu.yaml (same model, data, optimizer and schedule). FRN everywhere;
# pick another norm with e.g.
#   python tools/lazyconfig_train_net.py --config-file configs/lazy/tiny_mask_rcnn_cpu.py \
#       model.backbone.bottom_up.stages.norm=GN
from detectron2.layers import ShapeSpec

from .common.data.shapes_masks import dataloader
from .common.models.mask_rcnn_frn import model
from .common.optim import SGD as optimizer
from .common.schedule import multistep_with_warmup
from .common.train import train

model.backbone.bottom_up.stages.norm = "FRN"  # the stem, FPN, box and mask heads follow it

# narrow R18: 32-channel stem and res2 (res5: 256 channels)
model.backbone.bottom_up.stem.out_channels = 32
model.backbone.bottom_up.stages.depth = 18
model.backbone.bottom_up.stages.out_channels = 32
# 64-channel FPN; small anchors and few proposals for 160 px images
model.backbone.out_channels = 64
model.proposal_generator.head.in_channels = 64
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
model.proposal_generator.pre_nms_topk = (300, 300)
model.proposal_generator.post_nms_topk = (200, 100)
model.proposal_generator.batch_size_per_image = 128
# 4 classes; 4conv1fc box head of 64 channels and a 256-d FC; 4-conv mask head of 64 channels
model.roi_heads.num_classes = 4
model.roi_heads.batch_size_per_image = 128
model.roi_heads.box_head.input_shape = ShapeSpec(channels=64, height=7, width=7)
model.roi_heads.box_head.conv_dims = [64, 64, 64, 64]
model.roi_heads.box_head.fc_dims = [256]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=256)
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=64, width=14, height=14)
model.roi_heads.mask_head.conv_dims = [64, 64, 64, 64, 64]

optimizer.lr = 0.02
optimizer.weight_decay = 1e-4
lr_multiplier = multistep_with_warmup(max_iter=300, steps=(220, 280), warmup_iters=50)

train.max_iter = 300
train.checkpointer.period = 100
train.device = "cpu"
train.output_dir = "./output/lazy/tiny_mask_rcnn_cpu"
