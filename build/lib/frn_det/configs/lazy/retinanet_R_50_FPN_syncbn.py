# RetinaNet R50-FPN from scratch with SyncBN in the backbone, the FPN and the head (NaiveSyncBatchNorm without CUDA),
# following the FRN paper's detection protocol: total batch 64, 125k iterations, 2k
# warm-up, momentum 0.9, weight decay 4e-4 (configs/retinanet_R_50_FPN_syncbn.yaml).
#   python tools/lazyconfig_train_net.py --config-file configs/lazy/retinanet_R_50_FPN_syncbn.py --num-gpus 8
from .common.data.coco import dataloader
from .common.models.retinanet_frn import model
from .common.optim import SGD as optimizer
from .common.schedule import lr_multiplier_paper as lr_multiplier
from .common.train import train

model.backbone.bottom_up.stages.norm = "SyncBN"  # the stem, FPN and head follow it
train.output_dir = "./output/lazy/retinanet_R_50_FPN_syncbn"
