"""The command lines, one module each, with one console entry point each (pyproject.toml) and
a script in tools/: train (tools/train_net.py), lazy_train (tools/lazyconfig_train_net.py),
sweep (tools/sweep.py) and report (tools/report.py). They parse arguments and call the
library; nothing else imports them."""
