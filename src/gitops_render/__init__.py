"""gitops-render: turn one cluster.yaml into a validated, SOPS-encrypted Flux GitOps tree.

The library is organised by stage (see docs/ARCHITECTURE.md); the command line
in :mod:`gitops_render.cli` is a thin layer over :mod:`gitops_render.pipeline`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
