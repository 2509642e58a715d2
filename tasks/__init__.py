"""Tasks beside classification (which is commander.py and trainer.py): ``anomaly`` (generative models of normal
beats). A task says how outputs become metrics and pred/ files; the passes over loaders are trainer.py's."""
