"""`l3fabric lab`: containerlab topology files run on plain network namespaces.

Kept free of imports: `python -m l3fabric.lab.probe` runs inside namespaces
and should start fast.
"""
