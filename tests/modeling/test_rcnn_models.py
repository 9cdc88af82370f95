"""Faster R-CNN and Mask R-CNN with frn-det's norms in the backbone, FPN, box and mask heads."""
import pytest
import torch
from detectron2 import model_zoo
from detectron2.modeling import build_model
from frn_testing import record_execution
from rcnn_testing import TINY_MASK_RCNN, norms, rcnn_training_batch, tiny_rcnn
from torch import nn

from frn_det.config.build import build_config
from frn_det.config.checks import check_config
from frn_det.layers import TLU, FilterResponseNorm2d
from frn_det.layers.norms import EvoNorm2dS0, WSConv2d, WSLinear

ZOO = {"faster": "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
       "mask": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"}


def zoo_cfg(detector, norm, ours):
    """R18 with 4conv1fc (the GN configs' head): small enough to build in a second."""
    opts = [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.WEIGHTS",
        "",
        "MODEL.RESNETS.DEPTH",
        18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        64,
        "MODEL.ROI_BOX_HEAD.NUM_CONV",
        4,
        "MODEL.ROI_BOX_HEAD.NUM_FC",
        1,
    ]
    opts += norms(norm, fpn="" if norm == "FrozenBN" else None)
    if ours:
        opts += [
            "MODEL.BACKBONE.NAME",
            "build_frn_resnet_fpn_backbone",
            "MODEL.ROI_BOX_HEAD.NAME",
            "FRNFastRCNNConvFCHead",
            "MODEL.ROI_MASK_HEAD.NAME",
            "FRNMaskRCNNConvUpsampleHead",
        ]
    return build_config(model_zoo.get_config_file(ZOO[detector]), opts, announce=False)


@pytest.mark.parametrize("detector", ["faster", "mask"])
@pytest.mark.parametrize("norm", ["BN", "FrozenBN", "GN"])
def test_stock_norms_build_exactly_detectron2s_rcnn(detector, norm):
    torch.manual_seed(0)
    stock = build_model(zoo_cfg(detector, norm, ours=False)).eval()
    torch.manual_seed(0)
    ours = build_model(zoo_cfg(detector, norm, ours=True)).eval()
    assert type(ours.roi_heads.box_head).__name__ == "FRNFastRCNNConvFCHead"
    stock_sd, ours_sd = stock.state_dict(), ours.state_dict()
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in stock_sd.items()}
    # the same init too: nothing draws random numbers after the stock constructors
    assert all(torch.equal(ours_sd[k], v) for k, v in stock_sd.items())
    ours.load_state_dict(stock_sd, strict=True)
    image = {"image": torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8).float()}
    # a low threshold so that the untrained models return detections to compare
    for model in (stock, ours):
        model.roi_heads.box_predictor.test_score_thresh = 0.0
    with torch.no_grad():
        a, b = stock([image])[0]["instances"], ours([image])[0]["instances"]
    assert len(a) > 0
    torch.testing.assert_close(a.scores, b.scores)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
    if detector == "mask":
        torch.testing.assert_close(a.pred_masks, b.pred_masks)


def _head_events(model, norm_types):
    """Module calls of the box and mask heads' norms (and relu calls) in one inference."""
    image = [{"image": torch.rand(3, 64, 64) * 255}]
    model.roi_heads.box_predictor.test_score_thresh = 0.0  # detections, so that the mask head runs
    # the FC and the deconv too: the ReLUs after them must not count as following the norm before them
    types = (norm_types, nn.Linear, nn.ConvTranspose2d)
    return record_execution(model, image, lambda name, m: name.startswith("roi_heads.") and isinstance(m, types))


# backbone relus: none with FRN (TLU after residual adds), one per residual add of R18 with EvoNorm
@pytest.mark.parametrize("norm,layer,backbone_relus", [("FRN", FilterResponseNorm2d, 0), ("EvoNormS0", EvoNorm2dS0, 8)])
@pytest.mark.parametrize("norm_fcs", [False, True])
def test_no_relu_after_a_norm_act_layer_in_the_box_and_mask_heads(norm, layer, backbone_relus, norm_fcs):
    model = tiny_rcnn(norm, "MODEL.ROI_BOX_HEAD.NORM_FCS", norm_fcs)
    events = _head_events(model, layer)
    calls = [i for i, (_, m) in enumerate(events) if isinstance(m, layer)]
    names = {events[i][0] for i in calls}
    box = {f"roi_heads.box_head.conv{k}.norm" for k in range(1, 5)}
    mask = {f"roi_heads.mask_head.mask_fcn{k}.norm" for k in range(1, 5)}
    fcs = {"roi_heads.box_head.fc_norm1.norm"} if norm_fcs else set()
    assert names == box | mask | fcs
    assert [events[i][0] for i in calls if i + 1 < len(events) and events[i + 1][0] == "relu"] == []
    # the relus left: the RPN head's conv (5 levels), the mask head's deconv, the FC's without a norm there
    relus = [name for name, _ in events if name == "relu"]
    assert len(relus) == backbone_relus + 5 + 1 + (0 if norm_fcs else 1)


def test_tlu_replaces_the_relu_after_x_tlu_in_the_heads():
    model = tiny_rcnn("GN+TLU", "MODEL.ROI_BOX_HEAD.NORM_FCS", True)
    box, mask = model.roi_heads.box_head, model.roi_heads.mask_head
    assert all(isinstance(getattr(box, f"conv{k}").activation, TLU) for k in range(1, 5))
    assert all(isinstance(getattr(mask, f"mask_fcn{k}").activation, TLU) for k in range(1, 5))
    assert isinstance(box.fc_norm1.norm, nn.GroupNorm) and isinstance(box.fc_relu1, TLU)
    assert list(box._modules)[-3:] == ["fc1", "fc_norm1", "fc_relu1"]  # the order nn.Sequential runs them in
    assert isinstance(mask.deconv_relu, nn.ReLU)  # no norm before the deconv's ReLU


def test_frn_after_fcs_uses_the_learned_eps_and_the_convs_the_configured_one():
    model = tiny_rcnn("FRN", "MODEL.ROI_BOX_HEAD.NORM_FCS", True)
    box = model.roi_heads.box_head
    fc_frn = box.fc_norm1.norm
    assert isinstance(fc_frn, FilterResponseNorm2d) and fc_frn.learnable_eps and fc_frn.eps_l is not None
    assert fc_frn.eps == 1e-6 and fc_frn.tlu and isinstance(box.fc_relu1, nn.Identity)
    assert not box.conv1.norm.learnable_eps  # MODEL.FRN.LEARNABLE_EPS=False, the paper's default for convs
    assert "roi_heads.box_head.fc_norm1.norm.eps_l" in dict(model.named_parameters())
    torch.testing.assert_close(fc_frn.effective_eps().flatten(), torch.full((fc_frn.num_features,), 1e-6 + 1e-4))
    # on (N, C) features; the eps is learned: the loss reaches it
    x = torch.randn(6, box.fc1.out_features)
    y = box.fc_norm1(x)
    assert y.shape == x.shape
    y.pow(2).sum().backward()
    assert fc_frn.eps_l.grad is not None and fc_frn.eps_l.grad.abs().sum() > 0


def test_gnws_standardizes_the_head_convs_and_fcs():
    model = tiny_rcnn("GNWS", "MODEL.ROI_BOX_HEAD.NORM_FCS", True)
    box, mask = model.roi_heads.box_head, model.roi_heads.mask_head
    assert all(isinstance(getattr(box, f"conv{k}"), WSConv2d) for k in range(1, 5))
    assert all(isinstance(getattr(mask, f"mask_fcn{k}"), WSConv2d) for k in range(1, 5))
    assert isinstance(box.fc1, WSLinear) and not isinstance(mask.deconv, WSConv2d)
    x = torch.randn(3, box.fc1.in_features)
    w = box.fc1.weight
    w_hat = (w - w.mean(1, keepdim=True)) / torch.sqrt(w.var(1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(box.fc1(x), x @ w_hat.t() + box.fc1.bias, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("key", ["MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM"])
def test_bad_head_norm_is_rejected_before_training_naming_the_key(key):
    cfg = build_config(TINY_MASK_RCNN, [key, "FRM"], announce=False)
    with pytest.raises(ValueError, match=rf"{key}='FRM' is not a known norm.*Accepted: NORM or NORM\+ACT"):
        check_config(cfg, world_size=1)


# Every norm frn-det accepts, in both heads and after the FC (nnSyncBN needs a process group).
TRAINABLE_NORMS = ["BN", "SyncBN", "naiveSyncBN", "FrozenBN", "GN", "LN", "FRN", "FRN+ReLU", "GN+TLU", "BN+TLU",
                   "BRN", "SyncBRN", "GNWS", "EvoNormB0", "EvoNormS0"]


@pytest.mark.parametrize("norm", TRAINABLE_NORMS)
def test_every_norm_trains_in_the_box_head_fcs_and_the_mask_head(norm):
    torch.manual_seed(0)
    from detectron2.utils.events import EventStorage

    model = tiny_rcnn(norm, "MODEL.ROI_BOX_HEAD.NORM_FCS", True).train()
    with EventStorage():  # the R-CNN heads log training statistics
        losses = model(rcnn_training_batch())
    assert {"loss_cls", "loss_box_reg", "loss_mask"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    heads = [model.roi_heads.box_head, model.roi_heads.mask_head]
    trainable = [(n, p) for h in heads for n, p in h.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in trainable)
    fc_norm = model.roi_heads.box_head.fc_norm1.norm
    assert type(fc_norm).__name__ == type(model.roi_heads.box_head.conv1.norm).__name__  # the same norm after the FC


@pytest.mark.parametrize("norm", ["FRN", "GN+TLU", "BRN", "EvoNormB0", "EvoNormS0"])
def test_an_image_without_detections_gives_empty_masks(norm):
    model = tiny_rcnn(norm)
    model.roi_heads.box_predictor.test_score_thresh = 1.01  # nothing passes: the mask head sees no ROIs
    with torch.no_grad():
        instances = model([{"image": torch.rand(3, 64, 64) * 255}])[0]["instances"]
    assert len(instances) == 0 and tuple(instances.pred_masks.shape) == (0, 64, 64)  # pasted at image size
