"""Hydra sweep over norms x images per GPU: planning/ (config -> jobs -> Detectron2 configs,
checked) then running/ (train -> the run record, frn_det/record/). The command line is
frn_det/cli/sweep.py."""
