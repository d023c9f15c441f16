"""The registered policies, one class each; importing this package registers them in order."""
from . import (baselines, validation, information, proxy, memorisation, confident, churn,  # noqa: F401
               knn_student, neighbour_band, kd_view, explicit)  # (the order of `ckptkd policies`)
