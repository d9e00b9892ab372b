"""Many scans at once: the batch's inputs, its plan on a Dask cluster, each worker's scan, the outputs
and the cohort summary."""
