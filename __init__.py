"""reactforge: machine-learning force fields for catalysis, trained by active learning.

The repository's top-level folders are the subpackages: `reactforge.schemas` (the contract),
`reactforge.tasks` (one plain function per task kind), `reactforge.engine` (the run machinery),
`reactforge.workflows` (what to compute next), `reactforge.models` (model code we own)."""
__version__ = "0.1.0"
