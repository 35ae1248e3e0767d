"""netx_export: write networks in the lava-dl netx HDF5 format.

The format (``/layer/<i>/{type, shape, weight, bias, neuron/...}``) is described in
the project's Lava notes, section 2. Importing this package imports neither ``lava``
nor ``torch``.

Library surface (imported on first use)::

    import netx_export as nx
    net = nx.convert(model, x_calib, method="const")   # trace → calibrate → quantize (netx_export.api.convert)
    net.save("m.net"); net = nx.load("m.net")           # write / read-and-validate a network file
    nx.summary(net)                                     # the layer table as a dict
    nx.write_nir(net, "m.nir"); graph = nx.read_nir("m.nir")   # NIR exchange (netx_export.nir_io)
"""

_API = {"convert": "netx_export.api", "load": "netx_export.api", "summary": "netx_export.api",
        "quantize": "netx_export.quantize", "trace": "netx_export.trace", "calibrate": "netx_export.calibrate",
        "write_nir": "netx_export.nir_io", "read_nir": "netx_export.nir_io", "to_nir": "netx_export.nir_io",
        "ConvertedNetwork": "netx_export.network"}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'netx_export' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
