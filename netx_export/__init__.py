"""netx_export: write networks in the lava-dl netx HDF5 format.

The format (``/layer/<i>/{type, shape, weight, bias, neuron/...}``) is described in
the project's Lava notes, section 2. Importing this package imports neither ``lava``
nor ``torch``.
"""
