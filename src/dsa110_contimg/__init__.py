"""DSA-110 continuum imaging pipeline: the science and bookkeeping code.

The Snakemake workflow (Snakefile, rules/, scripts/) only wires files to the
functions in this package; everything here can be used and tested without it.
"""
