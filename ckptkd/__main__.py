"""``python -m ckptkd``: the ``ckptkd`` command, e.g. under ``torchrun --nproc_per_node 2 -m ckptkd train``."""
import sys

from .cli import main

sys.exit(main())
