# Faster R-CNN R50-FPN from scratch with FRN (with its TLU; the FPN's FRN without one) in the
# backbone, the FPN and the 4conv1fc box head, following Detectron2's from-scratch 9x
# protocol: total batch 64, lr 0.08, 202.5k iterations (decays at 187.5k and 197.5k), 1k
# warm-up, momentum 0.9, weight decay 1e-4 (configs/faster_rcnn_R_50_FPN_frn.yaml).
#   python tools/lazyconfig_train_net.py --config-file configs/lazy/faster_rcnn_R_50_FPN_frn.py --num-gpus 8
from .common.data.coco import dataloader
from .common.models.faster_rcnn_frn import model
from .common.optim import SGD as optimizer
from .common.schedule import lr_multiplier_scratch_9x as lr_multiplier
from .common.train import train

model.backbone.bottom_up.stages.norm = "FRN"  # the stem, FPN and box head follow it

optimizer.lr = 0.08  # 0.02 x 64/16: Detectron2's lr, linear in the batch
optimizer.weight_decay = 1e-4
train.max_iter = 202500
train.output_dir = "./output/lazy/faster_rcnn_R_50_FPN_frn"
