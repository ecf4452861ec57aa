"""torchzarr: Zarr v2/v3 arrays and groups as torch tensors."""
