"""Hydra sweep over norms x images per GPU: config -> Detectron2 config -> train -> metrics.json."""
