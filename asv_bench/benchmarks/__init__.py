"""asv benchmarks of fastact, by topic; generated from fastact.ACTIVATIONS."""
