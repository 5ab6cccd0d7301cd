"""The CNI plugin: a thin client of the node agent's control socket.

Everything under this package is imported by the plugin executable that a
container runtime starts for every pod, so it uses only the standard library
and `l3fabric.control` (tests/unit/test_cni_plugin.py checks this).
"""
