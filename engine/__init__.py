"""The run machinery, no science: Parsl executors from a site file, the engine that submits task specs
and journals their results by content hash, the run directory's store, progress and the command line.
Workflows (workflows/) decide what to compute; they reach tasks only through the engine."""
