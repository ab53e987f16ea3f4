"""The library behind `python -m mdvq.bench` (one job per module).

- :mod:`~mdvq.benchmarks.suite`: one benchmark run (its sections) and its markdown report.
- :mod:`~mdvq.benchmarks.timing`: marginal seconds per batch from interleaved timed runs.
- :mod:`~mdvq.benchmarks.builders`: the four models from conf/ with random weights, and
  synthetic batches of what each one trains on.
- :mod:`~mdvq.benchmarks.loops`: the same training step through Lightning and as a raw
  diffusers/PyTorch loop.
- :mod:`~mdvq.benchmarks.data`: data-pipeline and simulator rates.
- :mod:`~mdvq.benchmarks.sampling`: prior samples per second against sampler steps.
- :mod:`~mdvq.benchmarks.memory`: peak memory of a stage (CPU RSS, CUDA allocator).
- :mod:`~mdvq.benchmarks.tables`: markdown tables.
- :mod:`~mdvq.benchmarks.machine`: the machine a benchmark ran on (commit, CPU, versions).
"""
