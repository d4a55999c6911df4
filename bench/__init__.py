"""Benchmarks of Strongroom against pg_basebackup, pgBackRest and mariabackup."""
