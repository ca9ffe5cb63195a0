"""cnnfast's compiled layer (private): the Cython drivers and the C kernels.
Each module is described in docs/DESIGN.md, "Source layout"."""
