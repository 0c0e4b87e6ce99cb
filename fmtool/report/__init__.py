"""Human-facing output: the rich console (progress, tables) and the per-run report files."""
