"""scorer's version, in a module of its own: the manifest, the job's spec record and
`scorer --version` read it without importing the package's API (scorer/__init__ imports the
engines, which record it)."""

__version__ = "0.1.0"
