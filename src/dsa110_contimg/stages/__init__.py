"""One function per workflow rule: the glue between a rule's script and the science.

Each stage builds typed options from the validated config, calls the pure
science functions of the other subpackages, and writes through the one stage
wrapper (:func:`.common.stage_run`: log, job record, atomic outputs, sidecar,
registration). The Snakemake scripts only call these, so every stage can be
run and tested without Snakemake. One module per rule family; a job imports
only its own stage's module (and so pays only for its own imports).
"""
