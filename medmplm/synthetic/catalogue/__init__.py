"""Curated clinical data the synthetic MIMIC-III generator draws from (codes, drugs, labs, conditions)."""
