# A CPU-sized Faster R-CNN (narrow R18, 64-channel FPN, 4conv1fc box head of 64 channels,
# 160 px images) that learns the built-in synthetic shapes dataset in minutes on 2 cores: the
# LazyConfig twin of configs/tiny_faster_rcnn_cpu.yaml (same model, data, optimizer and
# schedule): tiny_mask_rcnn_cpu.py without the mask branch. FRN everywhere; pick another norm
# with e.g.
#   python tools/lazyconfig_train_net.py --config-file configs/lazy/tiny_faster_rcnn_cpu.py \
#       model.backbone.bottom_up.stages.norm=GN
from .common.data.shapes import dataloader
from .tiny_mask_rcnn_cpu import lr_multiplier, model, optimizer, train

for _key in ("mask_in_features", "mask_pooler", "mask_head"):
    model.roi_heads.pop(_key)  # StandardROIHeads: no mask_in_features -> mask_on False

train.output_dir = "./output/lazy/tiny_faster_rcnn_cpu"
