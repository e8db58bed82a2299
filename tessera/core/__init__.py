"""The core: devices, the primitive registry, tensors and tracers, dispatch and autodiff."""
