"""One module per model kind, each with `fit(spec, configs, isolated, workdir, seed, device, threads)`
returning (model paths, files to hash, E0 per Z in eV, commands run); `tasks.train` chooses one and
owns what they share (label checks, E0s, writing the training file, running a fitter with its log).

gap   GAP with soap_turbo (+ distance_2b) terms through quippy's `gap_fit`
mace  a MACE committee through `mace_run_train`, one member per seed, trained side by side
mfn   a matrix function network committee (models/mfn)
"""
