"""Small data sets built from files that install from PyPI (no download at run time)."""
