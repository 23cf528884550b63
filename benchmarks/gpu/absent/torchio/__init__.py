"""Stands in for torchio in the CPU rehearsal of the GPU run (benchmarks/gpu/run.py --tiny): torchio is not on the GPU
machine, so importing it must fail in the rehearsal too. Never on the path otherwise."""

raise ImportError("torchio is not installed on the GPU machine (benchmarks/gpu/run.py --tiny makes it unimportable)")
