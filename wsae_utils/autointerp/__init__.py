"""Auto-interpretability (Table 1): latent records, scoring, offline proxies, LLM client, SAEBench-style metrics."""
