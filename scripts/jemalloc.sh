# Sourced by CPU runs (`make demo`, benchmarks/quality.sh, benchmarks/cpu_allocator.py, or `. scripts/jemalloc.sh`
# before a training command): preloads jemalloc where it is installed (`make jemalloc`). glibc hands every freed
# allocation above 32 MiB back to the kernel, so a CPU training step page-faults its activations in anew
# (docs/benchmarks.md, "CPU memory allocator"). JEMALLOC=/path/to/libjemalloc.so.2 picks the library; JEMALLOC=
# (empty) keeps the system allocator.
JEMALLOC=${JEMALLOC-$(ls /usr/lib/*/libjemalloc.so.2 2>/dev/null | head -n 1)}
if [ -n "$JEMALLOC" ]; then
  export LD_PRELOAD="$JEMALLOC" MALLOC_CONF=background_thread:true,dirty_decay_ms:-1,muzzy_decay_ms:-1
fi
