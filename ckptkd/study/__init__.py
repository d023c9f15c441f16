"""Studies: grids of trainings and distillations that test the paper's claims with seeds."""
from .cells import Cell
from .runner import load_results, run_study

__all__ = ["Cell", "run_study", "load_results"]
