"""Section-level orchestration, one module per study, called by the notebooks."""
