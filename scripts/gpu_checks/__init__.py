"""The checks of scripts/gpu_check.py (its docstring says what each one does), one module a check
or group:

    common.py             sizes (Profile), synthetic images and small tensor helpers
    context.py            Context: device, sizes, work folder, shared data sets and the CPU teacher
    check_cpu_vs_cuda.py  check 1
    check_train.py        check 2: train, compile, torchrun
    check_ensemble.py     check 2: ensemble
    check_cache.py        check 2: cache
    check_throughput.py   check 3
    check_paper.py        check 4
    runner.py             CHECK_FUNCTIONS, running one check guarded, gpu_check.json
    docs_table.py         the GPU table of docs/benchmarks.md (--write-docs)
"""
import os

# cuBLAS reads this when it creates its first handle: deterministic matmuls (check ``cache``) need it.
# Set here, before any module of the package imports torch.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
