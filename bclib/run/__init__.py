"""Running the series: papermill runner, reports, sweeps, the benchmark and the `bclib` command."""
