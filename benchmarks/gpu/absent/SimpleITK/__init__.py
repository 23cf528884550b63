"""Stands in for SimpleITK in the CPU rehearsal of the GPU run (benchmarks/gpu/run.py --tiny): SimpleITK is not on the GPU
machine, so importing it must fail in the rehearsal too. Never on the path otherwise."""

raise ImportError("SimpleITK is not installed on the GPU machine (benchmarks/gpu/run.py --tiny makes it unimportable)")
