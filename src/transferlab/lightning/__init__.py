"""Lightning plugins of our own: atomic checkpoint IO, SyncBatchNorm for CPU DDP, and loggers (a CSV logger that
appends on resume, an MLflow logger that cannot stop a run). Each says which Lightning behaviour it replaces."""
