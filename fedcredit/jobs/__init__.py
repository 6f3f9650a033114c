"""The jobs layer: between the faces (CLI, notebook API) and the engines.

* ``jobfile``: a job file (TOML) read and checked into node configs and model settings;
* ``runner``: runs a job on the engine asked for (Flower simulation or in-process) with live
  progress, then has the coordinator write its outputs;
* ``in_process``: the embedded engine without Flower (tests, notebooks, the Python API);
* ``centralized``: the reference model trained on pooled data (demo and benchmarks only);
* ``submission``: a job file submitted to a named, running federation (deployment engine),
  and the record of what was sent.
"""
