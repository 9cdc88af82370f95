"""Read back what the trackers stored, with their own formats: W&B's offline run files
(the records of <run>/wandb/offline-run-*/run-<id>.wandb, wandb's own protobuf) and
MLflow's store through mlflow.search_runs."""
import json
import struct
from pathlib import Path

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of 7-byte-headed chunks
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _chunks(data: bytes):
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
        elif kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK  # zero padding to the block's end


def wandb_offline_runs(run_dir: Path) -> list:
    """One dict per offline session of a run folder: its folder's run id, the run id,
    group and name of its run record, config, the history rows (step -> values) and the
    summary. A session killed hard may have written no record yet (run_id None)."""
    from wandb.proto import wandb_internal_pb2 as pb

    sessions = []
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        s = {"folder_id": path.parent.name.rsplit("-", 1)[1], "run_id": None, "group": None, "name": None,
             "config": {}, "history": {}, "summary": {}}
        for chunk in _chunks(path.read_bytes()):
            record = pb.Record()
            record.ParseFromString(chunk)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                s.update(run_id=record.run.run_id, group=record.run.run_group, name=record.run.display_name)
                s["config"].update(_config(record.run.config))
            elif kind == "config":
                s["config"].update(_config(record.config))
            elif kind == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                s["history"].setdefault(row.pop("_step"), {}).update(row)
            elif kind == "summary":
                s["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                     for i in record.summary.update})
        sessions.append(s)
    return sessions


def _config(config) -> dict:
    values = {i.key: json.loads(i.value_json) for i in config.update}
    return {k: v.get("value", v) if isinstance(v, dict) else v for k, v in values.items() if not k.startswith("_")}


def mlflow_runs(db: Path, experiment: str) -> list:
    """The experiment's runs as MLflow's search API returns them."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{Path(db).resolve()}")
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def mlflow_metric_history(db: Path, run_id: str, key: str) -> list:
    from mlflow.tracking import MlflowClient

    return [(m.step, m.value) for m in MlflowClient(f"sqlite:///{Path(db).resolve()}").get_metric_history(run_id, key)]
