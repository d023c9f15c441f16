"""``python -m ckptkd``: the ``ckptkd`` command, e.g. under ``torchrun --nproc_per_node 2 -m ckptkd train``."""
import sys

from .cli import main

if __name__ == "__main__":  # DataLoader workers started by a fork server import this module again
    sys.exit(main())
