"""One module per schema revision (see ``dsa110_contimg.migrations``)."""
