"""Reports: plots and tables of runs, analyses and studies."""
