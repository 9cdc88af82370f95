"""Training options, as Detectron2's common/train.py (read by tools/lazyconfig_train_net.py,
Detectron2's and frn-det's). The FRN paper's protocol: 125k iterations from scratch."""
train = dict(
    output_dir="./output/lazy",
    init_checkpoint="",  # from scratch
    max_iter=125000,
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=0,  # 0: evaluate once, after training
    log_period=20,
    # BN statistics recomputed over num_iter training batches before each evaluation (TEST.PRECISE_BN
    # in YAML; read by frn-det's tools/lazyconfig_train_net.py, not by Detectron2's)
    precise_bn=dict(enabled=False, num_iter=200),
    device="cuda",  # frn-det's tool falls back to the CPU without CUDA
    # Experiment trackers (read by frn-det's tool; docs/tracking.md): any of "tensorboard",
    # "wandb", "mlflow"; the W&B project, the W&B group / MLflow experiment ("": the project)
    # and MLflow's tracking URI ("": $MLFLOW_TRACKING_URI, else sqlite:///<output_dir's parent>/mlflow.db).
    tracking=dict(loggers=["tensorboard"], project="frn-det", group="", mlflow_uri=""),
)
