"""The registered policies, one class each; importing this package registers them in order."""
from . import baselines, validation, information, proxy, memorisation, confident, churn, knn_student, explicit  # noqa: F401  (the order of `ckptkd policies`)
